"""Level-set geodesics by Dynamic String Sampling."""
