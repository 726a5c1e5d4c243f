package coordinator

import "time"

// DropHints makes c drop the result hints of watched batches for which drop
// returns true, as if they were lost on the way.
func DropHints(c *Coordinator, drop func(item int) bool) { c.dropHint = drop }

// SendKeeperEvery sets how often c may send the work stream's keeper
// (keeper.go); 0 sends one with every work message.
func SendKeeperEvery(c *Coordinator, d time.Duration) { c.keeper.every.Store(int64(d)) }

// KeeperDisabled reports whether c stopped sending keepers.
func KeeperDisabled(c *Coordinator) bool { return c.keeper.disabled.Load() }

// OnRead has c call see with the sequence after which each read of a
// batch's stored results starts: a watched batch's read, or a consumer's
// creation.
func OnRead(c *Coordinator, see func(batch string, after uint64)) { c.onRead = see }
