package workertest_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fanoutdev/fanout/worker"
	"github.com/fanoutdev/fanout/worker/workertest"
)

type chargeInput struct {
	Account string `json:"account"`
	Cents   int    `json:"cents"`
}

type chargeOutput struct {
	Receipt string `json:"receipt"`
}

var errRateLimited = errors.New("payment service: rate limited")

// charge is the handler under test: it refuses bad input for good, asks
// to be retried later when rate limited, and uses the idempotency key so
// that a second attempt does not charge twice.
func charge(ctx context.Context, in chargeInput) (chargeOutput, error) {
	if in.Cents <= 0 {
		return chargeOutput{}, worker.Permanent(fmt.Errorf("cents %d: must be positive", in.Cents))
	}
	if in.Account == "busy" {
		return chargeOutput{}, worker.RetryAfter(30*time.Second, errRateLimited)
	}
	info, _ := worker.InfoFrom(ctx)
	return chargeOutput{Receipt: "r-" + info.IdempotencyKey}, nil
}

// Unit-test a handler without a server: each run is one attempt, classified
// as a worker would.
func Example() {
	ctx := context.Background()

	out, res, err := workertest.RunTyped(ctx, charge, chargeInput{Account: "ada", Cents: 500}, workertest.Item("invoices-7", 3))
	fmt.Println(res.Outcome, out.Receipt, err)

	_, res, err = workertest.RunTyped(ctx, charge, chargeInput{Account: "ada", Cents: 0})
	fmt.Println(res.Outcome, res.Recorded)

	_, res, err = workertest.RunTyped(ctx, charge, chargeInput{Account: "busy", Cents: 1})
	fmt.Println(res.Outcome, "after", res.Delay, errors.Is(err, errRateLimited))

	_, res, _ = workertest.RunTyped(ctx, charge, chargeInput{Account: "busy", Cents: 1}, workertest.Attempt(3), workertest.MaxAttempts(3))
	fmt.Println(res.Outcome, res.Recorded)
	// Output:
	// succeeded r-invoices-7/3 <nil>
	// failed cents 0: must be positive
	// retried after 30s true
	// failed payment service: rate limited
}
