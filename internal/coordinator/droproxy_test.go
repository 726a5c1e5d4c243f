package coordinator_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// dropProxy sits between a client and a NATS server and forwards
// everything, except the client's publishes for which drop returns true:
// those are swallowed, as a server that dies with a forwarded publish
// would, while the client's connection stays up.
type dropProxy struct {
	ln   net.Listener
	drop func(subject string, msg []byte) bool
	wg   sync.WaitGroup
}

func startDropProxy(t *testing.T, serverAddr string, drop func(subject string, msg []byte) bool) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, drop: drop}
	t.Cleanup(func() {
		_ = ln.Close()
		p.wg.Wait()
	})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", serverAddr)
			if err != nil {
				_ = client.Close()
				continue
			}
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(client, server)
				_ = client.Close()
			}()
			go func() {
				defer p.wg.Done()
				p.forward(server, client)
				_ = server.Close()
			}()
		}
	}()
	return p
}

func (p *dropProxy) url() string { return "nats://" + p.ln.Addr().String() }

// forward copies the client's protocol to the server a command at a time,
// leaving out the publishes to drop.
func (p *dropProxy) forward(server io.Writer, client io.Reader) {
	r := bufio.NewReaderSize(client, 64*1024)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		f := strings.Fields(string(line))
		var size int
		if len(f) > 0 {
			switch strings.ToUpper(f[0]) {
			case "PUB", "HPUB": // the last field is the payload's size
				size, _ = strconv.Atoi(f[len(f)-1])
			default:
				size = -1
			}
		}
		if size < 0 || len(f) < 2 {
			if _, err := server.Write(line); err != nil {
				return
			}
			continue
		}
		msg := make([]byte, size+2) // the payload and its CRLF
		if _, err := io.ReadFull(r, msg); err != nil {
			return
		}
		if p.drop(f[1], msg) {
			continue
		}
		if _, err := server.Write(append(line, msg...)); err != nil {
			return
		}
	}
}

// hasHeader reports whether a publish's bytes hold the header line.
func hasHeader(msg []byte, name, value string) bool {
	return bytes.Contains(msg, []byte("\r\n"+name+": "+value+"\r\n"))
}
