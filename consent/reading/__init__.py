"""Reading exports: listing, reading and parsing files into frames; one adapter per file format."""
