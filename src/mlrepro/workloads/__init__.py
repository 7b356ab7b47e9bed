"""The four workloads; each module has add_arguments(parser) and run(args, record)."""
