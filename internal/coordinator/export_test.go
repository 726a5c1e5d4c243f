package coordinator

import "time"

// SendKeeperEvery sets how often c may send the work stream's keeper
// (keeper.go); 0 sends one with every work message.
func SendKeeperEvery(c *Coordinator, d time.Duration) { c.keeper.every.Store(int64(d)) }

// KeeperDisabled reports whether c stopped sending keepers.
func KeeperDisabled(c *Coordinator) bool { return c.keeper.disabled.Load() }
