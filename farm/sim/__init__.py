"""Virtual devices for development and tests: real peers (OpenSSH sshd) with simulated power and thermal sensors."""
