"""The parts of bench/control_plane.py: the stack it measures (stack, counting, cpu, profile), one
module per part measured (throughput, floor, idle, depth) and the report."""
