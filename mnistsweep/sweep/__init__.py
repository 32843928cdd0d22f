"""What a sweep is: its spec, its folder, its records and each cell's state."""
