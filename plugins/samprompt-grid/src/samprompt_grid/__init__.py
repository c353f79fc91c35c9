"""Example samprompt plugin providing the ``grid-points`` prompt strategy."""
