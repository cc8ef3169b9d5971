package clusterset

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
)

// Source keeps an Index of the cluster's ServiceImports and MCS EndpointSlices up to date:
// each change rebuilds the index (after Coalesce, so that a burst costs one build) and
// swaps it in whole, so a query sees one consistent snapshot.
type Source struct {
	// Coalesce gathers the changes of a burst into one build (default 20ms).
	Coalesce time.Duration

	cache   cache.Cache
	index   atomic.Pointer[Index]
	synced  atomic.Bool
	changed chan struct{}
}

// NewSource watches the cluster cfg reaches.
func NewSource(cfg *rest.Config) (*Source, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := mcsv1beta1.Install(scheme); err != nil {
		return nil, err
	}
	// Only MCS EndpointSlices, those that name their source cluster.
	mcs, err := labels.NewRequirement(mcsv1beta1.LabelSourceCluster, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&discoveryv1.EndpointSlice{}: {Label: labels.NewSelector().Add(*mcs)},
	}})
	if err != nil {
		return nil, fmt.Errorf("watch the cluster: %w", err)
	}
	s := &Source{cache: c, changed: make(chan struct{}, 1)}
	s.index.Store(Build(nil, nil))
	return s, nil
}

// Index is the current snapshot.
func (s *Source) Index() *Index { return s.index.Load() }

// Synced tells whether the index holds what the cluster held once the watches started.
func (s *Source) Synced() bool { return s.synced.Load() }

// Run watches until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	if s.Coalesce == 0 {
		s.Coalesce = 20 * time.Millisecond
	}
	kick := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.kick() },
		UpdateFunc: func(any, any) { s.kick() },
		DeleteFunc: func(any) { s.kick() },
	}
	for _, obj := range []client.Object{&mcsv1beta1.ServiceImport{}, &discoveryv1.EndpointSlice{}} {
		inf, err := s.cache.GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(kick); err != nil {
			return err
		}
	}
	errs := make(chan error, 1)
	go func() { errs <- s.cache.Start(ctx) }()
	if !s.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the cluster's ServiceImports and EndpointSlices did not sync: %w", context.Cause(ctx))
	}
	if err := s.build(ctx); err != nil {
		return err
	}
	s.synced.Store(true)
	for {
		select {
		case <-ctx.Done():
			return <-errs
		case <-s.changed:
		}
		select {
		case <-ctx.Done():
			return <-errs
		case <-time.After(s.Coalesce):
		}
		if err := s.build(ctx); err != nil {
			return err
		}
	}
}

func (s *Source) kick() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Source) build(ctx context.Context) error {
	var imports mcsv1beta1.ServiceImportList
	if err := s.cache.List(ctx, &imports); err != nil {
		return err
	}
	var slices discoveryv1.EndpointSliceList
	if err := s.cache.List(ctx, &slices); err != nil {
		return err
	}
	s.index.Store(Build(imports.Items, slices.Items))
	return nil
}
