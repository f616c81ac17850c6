"""What the runner may ask of a device, independent of how the device is reached."""
