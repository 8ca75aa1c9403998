"""The node agent (`policyc agent`): a resident front door to the runtime operations, and its clients."""
