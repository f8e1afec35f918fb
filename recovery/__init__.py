"""Start-up recovery from the journal, the catch-up protocol (both ends), and drills."""
