"""emotune: facial-expression recognition that picks music for your mood."""
