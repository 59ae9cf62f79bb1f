"""The ground floor: errors, the example record, atomic io, the config schema, model loading, the registry."""
