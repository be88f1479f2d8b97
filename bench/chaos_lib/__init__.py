"""The parts of bench/chaos.py: its settings (config), the fleet it breaks (fleet, on the shared
harness in tests/harness/), the clients (clients), the run (run), the audit and the report."""
