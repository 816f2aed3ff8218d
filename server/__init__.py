"""Chronicle's server: gRPC frontend, history engine, matching and timers over Postgres."""
