"""bbbscaler: sizes the BBB Auto Scaling Group; scales out fast, scales in only by draining."""
