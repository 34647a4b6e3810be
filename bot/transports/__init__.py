"""Where alerts and answers go: the console, Slack, Matrix."""
