"""The digital twin: a SimPy model of demand and clouds that runs the very same policy as live."""
