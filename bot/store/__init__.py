"""Where the bot keeps what it knows between polls and restarts."""
