"""Route modules; each handler parses, calls one service function, returns."""
