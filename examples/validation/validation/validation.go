// Package validation is the worker side of the validation example: record
// validation with partial failures. Activity "validate" checks one customer
// record; an invalid record fails its item with a permanent error saying
// what is wrong (retrying cannot fix data), and the batch's
// tolerated_failure_percent decides whether a few bad records are
// acceptable or the whole batch fails.
package validation

import (
	"context"
	"fmt"
	"net/mail"
	"slices"
	"strings"

	"github.com/fanoutdev/fanout/worker"
)

// Activity is the name the worker serves.
const Activity = "validate"

// Record is one customer record, one item.
type Record struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Email   string `json:"email"`
	Age     int    `json:"age"`
	Country string `json:"country"`
}

// Clean is a valid record as the activity returns it: normalised.
type Clean struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Email   string `json:"email"`
	Age     int    `json:"age"`
	Country string `json:"country"`
}

// Countries are the country codes a record may have.
var Countries = []string{"DE", "ES", "FR", "GB", "IT", "NL", "PL", "SE", "US"}

// Check validates a record and returns it normalised (trimmed, lower-case
// e-mail, upper-case country), or an error listing every problem.
func Check(r Record) (Clean, error) {
	c := Clean{
		ID: strings.TrimSpace(r.ID), Name: strings.TrimSpace(r.Name),
		Email: strings.ToLower(strings.TrimSpace(r.Email)), Age: r.Age,
		Country: strings.ToUpper(strings.TrimSpace(r.Country)),
	}
	var problems []string
	if c.ID == "" {
		problems = append(problems, "id is missing")
	}
	if c.Name == "" {
		problems = append(problems, "name is missing")
	}
	if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email || !strings.Contains(c.Email[strings.LastIndex(c.Email, "@")+1:], ".") {
		problems = append(problems, fmt.Sprintf("email %q is not an address", r.Email))
	}
	if c.Age < 18 || c.Age > 120 {
		problems = append(problems, fmt.Sprintf("age %d is outside 18-120", r.Age))
	}
	if !slices.Contains(Countries, c.Country) {
		problems = append(problems, fmt.Sprintf("country %q is not one of %s", r.Country, strings.Join(Countries, " ")))
	}
	if len(problems) > 0 {
		id := c.ID
		if id == "" {
			id = "(no id)"
		}
		return Clean{}, fmt.Errorf("record %s: %s", id, strings.Join(problems, "; "))
	}
	return c, nil
}

// Validate is the activity "validate": Check, with an invalid record made
// a permanent error, so that its item fails at once instead of being
// retried.
func Validate(_ context.Context, r Record) (Clean, error) {
	c, err := Check(r)
	if err != nil {
		return Clean{}, worker.Permanent(err)
	}
	return c, nil
}

// Register adds "validate" to w.
func Register(w *worker.Worker) {
	worker.Handle(w, Activity, Validate)
}

// Records makes n sample records; those at the indexes in bad get one
// of a few kinds of error each.
func Records(n int, bad ...int) []Record {
	names := []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen", "Ken Thompson"}
	out := make([]Record, n)
	for i := range out {
		name := names[i%len(names)]
		out[i] = Record{
			ID:      fmt.Sprintf("c-%04d", i+1),
			Name:    name,
			Email:   fmt.Sprintf("%s.%d@example.com", strings.ToLower(strings.Fields(name)[0]), i+1),
			Age:     20 + (i*7)%60,
			Country: Countries[i%len(Countries)],
		}
	}
	for k, i := range bad {
		switch k % 4 {
		case 0:
			out[i].Email = strings.Replace(out[i].Email, "@", " at ", 1)
		case 1:
			out[i].Age = 7
		case 2:
			out[i].Country = "Atlantis"
		case 3:
			out[i].Name, out[i].Age = "", 150
		}
	}
	return out
}
