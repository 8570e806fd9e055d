"""Network definitions, one module per architecture family."""
