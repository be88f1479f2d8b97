"""The model registry as a service: registration (used by the CLI and the admin API) and the
resolution of a job's model references at submit."""
