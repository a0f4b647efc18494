package sdk

// LegacyPull returns src, a Source dispensed from a plugin, pulling as a
// host that predates the compact stream forms: each batch in a message of
// its own, traits in maps.
func LegacyPull(src Source) Source {
	c := *src.(*sourceClient)
	c.legacy = true
	return &c
}

// RowPull returns src (a plugin's source client) asking for the compact
// forms but not for columns, as a host that predates columns does.
func RowPull(src Source) Source {
	c := *src.(*sourceClient)
	c.noColumns = true
	return &c
}
