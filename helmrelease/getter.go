package helmrelease

import (
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"helm.sh/helm/v4/pkg/action"

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

	mu sync.Mutex
	// configs are Helm's action configurations by namespace, kept warm:
	// their Kubernetes clients cache what they read once (the OpenAPI
	// schema that validates manifests, above all).
	configs map[string]*action.Configuration
}

// maxConfigs bounds the namespaces whose Helm configuration a cluster keeps.
const maxConfigs = 64

// configuration returns Helm's action configuration for namespace, with
// the Secrets storage driver, built on first use. Its Capabilities are
// dropped on every use, so that each invocation sees the cluster's API
// versions as they are now (a chart's CRDs installed since, say).
func (c *cluster) configuration(namespace string, log *slog.Logger) (*action.Configuration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg, ok := c.configs[namespace]; ok {
		cfg.Capabilities = nil
		return cfg, nil
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(log.Handler()))
	if err := cfg.Init(getter{c: c, namespace: namespace}, namespace, "secret"); err != nil {
		return nil, fmt.Errorf("helm configuration for namespace %s: %w", namespace, err)
	}
	if c.configs == nil || len(c.configs) >= maxConfigs {
		c.configs = map[string]*action.Configuration{}
	}
	c.configs[namespace] = cfg
	return cfg, nil
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
