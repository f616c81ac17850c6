"""Power on the device: find a meter, sample it with a tiny sh loop, turn raw readings into watts and joules."""
