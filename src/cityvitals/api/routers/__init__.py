"""One router per resource; ``cityvitals.api.app.routers_for`` picks those whose stage this install has."""
