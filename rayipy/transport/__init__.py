"""ZeroMQ endpoints: signed sockets, wake-ups between threads, addresses. No scheduling."""
