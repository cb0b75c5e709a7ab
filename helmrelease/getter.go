package helmrelease

import (
	"fmt"
	"net/http"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// cluster is what every Helm action on one cluster shares for the life of
// the process: one HTTP transport (so one connection pool and one cached,
// self-refreshing bearer token) and discovery cached in memory.
type cluster struct {
	cfg    *rest.Config
	disc   discovery.CachedDiscoveryInterface
	mapper meta.RESTMapper
}

// newCluster wraps cfg, a rest.Config from kube.NewRESTConfig whose
// WrapTransport refreshes the token. The transport is built once here and
// handed to every client Helm builds, so that Helm's many clients share the
// token source and connections instead of each dialling its own.
func newCluster(cfg *rest.Config) (*cluster, error) {
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("transport for %s: %w", cfg.Host, err)
	}
	shared := &rest.Config{
		Host:      cfg.Host,
		APIPath:   cfg.APIPath,
		Transport: rt,
		QPS:       cfg.QPS,
		Burst:     cfg.Burst,
		UserAgent: cfg.UserAgent,
		Timeout:   cfg.Timeout,
	}
	disc, err := discovery.NewDiscoveryClientForConfigAndClient(shared, &http.Client{Transport: rt})
	if err != nil {
		return nil, fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
	}
	cached := memory.NewMemCacheClient(disc)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
	return &cluster{cfg: shared, disc: cached, mapper: mapper}, nil
}

// getter is a genericclioptions.RESTClientGetter for one namespace of a
// cluster: what Helm's action.Configuration.Init takes.
type getter struct {
	c         *cluster
	namespace string
}

func (g getter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.c.cfg), nil }

func (g getter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) { return g.c.disc, nil }

func (g getter) ToRESTMapper() (meta.RESTMapper, error) { return g.c.mapper, nil }

// ToRawKubeConfigLoader serves only the namespace: there is no kubeconfig.
func (g getter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(*clientcmdapi.NewConfig(),
		&clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: g.namespace}})
}
