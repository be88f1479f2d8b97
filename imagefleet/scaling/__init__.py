"""Autoscaling: pools of workers, pure scaling and pricing decisions, and the providers that
start and stop workers (local processes, Kubernetes, SaladCloud, user scripts).

Everything here except `providers/` is pure: the orchestrator's control loop gathers the
inputs (demand per pool from the database, instances from the providers), calls
`decide_scale` and `choose_victims`, and hands the answers to a provider.
"""
