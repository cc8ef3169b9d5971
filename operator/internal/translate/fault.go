package translate

import (
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
)

// faultFilters are the HTTP filters, before the router, of a client listener of s: the
// fault filter (gRFC A33) when s has faults to inject.
func faultFilters(s *Service) []*hcmv3.HttpFilter {
	f := s.Fault
	if f == nil {
		return nil
	}
	cfg := &faultv3.HTTPFault{}
	if f.DelayPercent > 0 {
		cfg.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay)},
			Percentage:         percent(f.DelayPercent),
		}
	}
	if f.AbortPercent > 0 {
		cfg.Abort = &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_GrpcStatus{GrpcStatus: f.AbortCode},
			Percentage: percent(f.AbortPercent),
		}
	}
	return []*hcmv3.HttpFilter{{Name: wellknown.Fault, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: packAny(cfg)}}}
}

func percent(p uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: p, Denominator: typev3.FractionalPercent_HUNDRED}
}
