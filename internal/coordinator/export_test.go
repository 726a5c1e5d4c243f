package coordinator

// DropHints makes c drop the result hints of watched batches for which drop
// returns true, as if they were lost on the way.
func DropHints(c *Coordinator, drop func(item int) bool) { c.dropHint = drop }
