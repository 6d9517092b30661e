"""Who is calling: API keys (made, listed, revoked, authenticated), the admin token, rate limits."""
