"""Events: every change of state, recorded with the change, published in one global order."""
