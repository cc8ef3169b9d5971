package agent

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The app's xDS client talks to the agent on the pod's loopback, in plaintext; the agent
// passes each ADS stream to the control plane over its own mTLS connection, message for
// message, without decoding them.

const adsService = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

// frame is one gRPC message, undecoded.
type frame []byte

// rawCodec moves frames as they are. Its name is "proto" so that the content type stays
// application/grpc+proto on both sides.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*frame), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*frame) = append((*v.(*frame))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// newProxyServer is the gRPC server the app connects to; upstream is the connection to
// the control plane.
func newProxyServer(upstream *grpc.ClientConn) *grpc.Server {
	return grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}), //nolint:staticcheck // the V2 codec API moves mem.BufferSlices; frames are simpler
		grpc.UnknownServiceHandler(func(_ any, down grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(down)
			if !strings.HasPrefix(method, adsService) {
				return status.Errorf(codes.Unimplemented, "the meshfed agent passes on xDS (ADS) streams only, not %s", method)
			}
			return pipe(down, upstream, method)
		}))
}

// pipe carries one stream both ways until either side ends it.
func pipe(down grpc.ServerStream, upstream *grpc.ClientConn, method string) error {
	ctx, cancel := context.WithCancel(down.Context())
	defer cancel()
	up, err := upstream.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		for {
			var f frame
			if err := down.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					sent <- up.CloseSend()
				} else {
					sent <- err
				}
				return
			}
			if err := up.SendMsg(&f); err != nil {
				sent <- err
				return
			}
		}
	}()
	for {
		var f frame
		if err := up.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := down.SendMsg(&f); err != nil {
			return err
		}
		select {
		case err := <-sent:
			if err != nil {
				return err
			}
		default:
		}
	}
}
