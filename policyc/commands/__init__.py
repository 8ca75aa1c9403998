"""One module per `policyc` subcommand: `register(sub)` adds its parser, `run(args)` returns the exit status."""
