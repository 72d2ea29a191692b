"""Real simulators wrapped as Gymnasium environments."""
