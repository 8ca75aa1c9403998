"""The verifier: the IR as Z3 formulas, checks over them, and their findings."""
