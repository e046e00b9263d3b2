"""One principal replica: agent gRPC server, sessions, ownership, handoff, admin, PKI."""
