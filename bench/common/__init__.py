"""What the benchmark scripts share: the machine's description and load, figures as text."""
