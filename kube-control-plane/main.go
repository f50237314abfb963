// Command kube-control-plane runs a tenant's kube-apiserver, kube-controller-manager and
// kube-scheduler in one process: the upstream components' own packages at the pinned release,
// configured from their own flags, as their commands would (ADR 12, decision 16).
//
//	kube-control-plane kube-apiserver --flag=value ... \
//	    [kube-controller-manager --flag=value ...] [kube-scheduler --flag=value ...]
//
// Each component name starts its flags. The controller-manager and scheduler are configured once
// the API server reports ready, as separate processes started after it would find it: both read
// the API server while they are configured. A signal stops all three and the process ends when
// the API server has shut down (0, or 1 if its shutdown failed, as its command does); any
// component that ends on its own ends the process with 1.
//
// Why one process: the three binaries map ~210 MiB of code that their shared packages
// (client-go, apimachinery, the API types) repeat; one process maps them once.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/flagz"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/transport"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/cli/globalflag"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	apiapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiopts "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	cmopts "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedopts "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

const (
	apiserver         = "kube-apiserver"
	controllerManager = "kube-controller-manager"
	scheduler         = "kube-scheduler"
)

// groups splits the arguments at each component name.
func groups(args []string) (map[string][]string, error) {
	out := map[string][]string{}
	current := ""
	for _, a := range args {
		switch a {
		case apiserver, controllerManager, scheduler:
			if _, seen := out[a]; seen {
				return nil, fmt.Errorf("%s named twice", a)
			}
			current = a
			out[a] = []string{}
			continue
		}
		if current == "" {
			return nil, fmt.Errorf("argument %q before a component name (%s, %s, %s)", a, apiserver, controllerManager, scheduler)
		}
		out[current] = append(out[current], a)
	}
	if _, ok := out[apiserver]; !ok {
		return nil, errors.New(apiserver + " is required")
	}
	return out, nil
}

// parse reads one component's flags as its own command would (global klog flags included).
func parse(name string, nfs cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	globalflag.AddGlobalFlags(nfs.FlagSet("global"), name, logs.SkipLoggingConfigurationFlags())
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", name, fs.Args())
	}
	return nil
}

func fail(who string, err error) {
	klog.ErrorS(err, "component failed", "component", who)
	klog.FlushAndExit(klog.ExitFlushTimeout, 1)
}

// stopping ends the process as a signal should when one came while the others were being
// configured: once the API server has shut down, with its code.
func stopping(ctx context.Context, apiDone <-chan error) {
	if ctx.Err() == nil {
		return
	}
	if err := <-apiDone; err != nil {
		fail(apiserver, err)
	}
	klog.Flush()
	os.Exit(0)
}

type ended struct {
	who string
	err error
}

func main() {
	args, err := groups(os.Args[1:])
	if err == nil {
		err = startGC()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-control-plane:", err)
		os.Exit(2)
	}
	logs.InitLogs()
	defer logs.FlushLogs()
	// The controller-manager's and scheduler's kubeconfigs name their certificate files, which a
	// renewal replaces: client-go re-reads them on new connections and, for connections already
	// open, every CertCallbackRefreshDuration (5 minutes upstream, longer than a short
	// renewBefore may leave an old certificate), then closes its connections. Reading two small
	// files every 10 s costs nothing; the API server's own clients reload as before.
	transport.CertCallbackRefreshDuration = clientCertRefresh
	ctx := genericapiserver.SetupSignalContext()

	// All options first: the first component's flags close the shared feature gate to new gates.
	api := apiopts.NewServerRunOptions()
	cm, err := cmopts.NewKubeControllerManagerOptions()
	if err != nil {
		fail(controllerManager, err)
	}
	sched := schedopts.NewOptions()

	// Every component's flags before the shared feature gates and versions are set from them and
	// before anything runs (the API server's logging flags apply to all three).
	apiFlags := api.Flags()
	api.Flagz = flagz.NamedFlagSetsReader{FlagSets: apiFlags}
	if err := parse(apiserver, apiFlags, args[apiserver]); err != nil {
		fail(apiserver, err)
	}
	_, runCM := args[controllerManager]
	_, runScheduler := args[scheduler]
	if runCM {
		nfs := cm.Flags(cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
		cm.ParsedFlags = &nfs
		if err := parse(controllerManager, nfs, args[controllerManager]); err != nil {
			fail(controllerManager, err)
		}
		// A leader that loses its lease exits the process (os.Exit in the components' callbacks):
		// the API server's with it. One control plane of a tenant needs no election.
		if cm.Generic.LeaderElection.LeaderElect {
			fail(controllerManager, errors.New("--leader-elect=false is required in one process"))
		}
	}
	if runScheduler {
		if err := parse(scheduler, *sched.Flags, args[scheduler]); err != nil {
			fail(scheduler, err)
		}
		if sched.LeaderElection != nil && sched.LeaderElection.LeaderElect {
			fail(scheduler, errors.New("--leader-elect=false is required in one process"))
		}
	}
	registry := api.GenericServerRunOptions.ComponentGlobalsRegistry
	if err := registry.Set(); err != nil {
		fail(apiserver, err)
	}
	// The components' own loopback and client warnings, silenced as their commands do.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := logsapi.ValidateAndApply(api.Logs, registry.FeatureGateFor(basecompatibility.DefaultKubeComponent)); err != nil {
		fail(apiserver, err)
	}
	completed, err := api.Complete(ctx)
	if err != nil {
		fail(apiserver, err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		fail(apiserver, utilerrors.NewAggregate(errs))
	}
	// The metrics each command adds (feature enablement, component versions), once a process.
	registry.FeatureGateFor(basecompatibility.DefaultKubeComponent).(featuregate.MutableFeatureGate).AddMetrics()
	registry.AddMetrics()
	apiDone := make(chan error, 1)
	go func() { apiDone <- apiapp.Run(ctx, completed) }()

	others := make(chan ended, 2)
	// Each component's log lines carry its name (one log for the three).
	named := func(name string) context.Context {
		return klog.NewContext(ctx, klog.Background().WithName(name))
	}
	if runCM || runScheduler {
		kubeconfig := sched.Deprecated.Kubeconfig
		if runCM {
			kubeconfig = cm.Generic.ClientConnection.Kubeconfig
		}
		waitReady(ctx, kubeconfig, apiDone)
	}
	if runCM {
		// Configured without the signal's context, as its command does (its event broadcaster
		// would stop first); run with it, as its command does where the lock is released on exit.
		c, err := cm.Config(context.Background(), cmapp.KnownControllers(), cmapp.ControllersDisabledByDefault(), cmapp.ControllerAliases())
		if err != nil {
			stopping(ctx, apiDone)
			fail(controllerManager, err)
		}
		go func() { others <- ended{controllerManager, cmapp.Run(named(controllerManager), c.Complete())} }()
	}
	if runScheduler {
		if sched.InformerName == nil {
			informerName, err := cache.NewInformerName(scheduler)
			if err != nil {
				fail(scheduler, err)
			}
			sched.InformerName = informerName
		}
		schedCtx := named(scheduler)
		cc, s, err := schedapp.Setup(schedCtx, sched)
		if err != nil {
			stopping(ctx, apiDone)
			fail(scheduler, err)
		}
		go func() { others <- ended{scheduler, schedapp.Run(schedCtx, cc, s)} }()
	}

	settleGC(ctx)

	for {
		select {
		case err := <-apiDone:
			if err == nil && ctx.Err() == nil {
				err = errors.New("ended")
			}
			if err != nil {
				fail(apiserver, err)
			}
			klog.Flush()
			os.Exit(0)
		case e := <-others:
			if ctx.Err() == nil {
				if e.err == nil {
					e.err = errors.New("ended")
				}
				fail(e.who, e.err)
			}
			// Stopping: the API server's shutdown ends the process.
		}
	}
}

// clientCertRefresh is how often client-go's clients that read their certificate from files look
// at them again (transport.CertCallbackRefreshDuration).
const clientCertRefresh = 10 * time.Second

// settled is KOSMOS_VC_GOGC_SETTLED: the garbage collector's target (a percentage, as GOGC) once
// start-up is over; -1 when it is not set (GOGC alone decides, as in any Go program).
var settled = -1

// settleAfter is KOSMOS_VC_GOGC_SETTLE_AFTER (a Go duration; 30s when not set): what is left of
// start-up once the API server serves and the others have started (their first lists, the
// controllers' start) takes seconds, even on a busy machine.
var settleAfter = 30 * time.Second

// startGC reads KOSMOS_VC_GOGC_SETTLED and, when it is set, runs the start-up at Go's default
// target (100) whatever GOGC says: the heap may grow four times as much between collections as
// at a lean target (25), so the start-up's allocations cost fewer of them. GOGC stays what a
// binary without this reads.
func startGC() error {
	v, ok := os.LookupEnv("KOSMOS_VC_GOGC_SETTLED")
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return fmt.Errorf("KOSMOS_VC_GOGC_SETTLED=%q: a whole percentage of at least 1 is required", v)
	}
	if v, ok := os.LookupEnv("KOSMOS_VC_GOGC_SETTLE_AFTER"); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("KOSMOS_VC_GOGC_SETTLE_AFTER=%q: a duration such as 30s is required", v)
		}
		settleAfter = d
	}
	settled = n
	debug.SetGCPercent(100)
	return nil
}

// settleGC sets the settled target settleAfter after it is called (once the API server is ready
// and the others have started; from the start when the API server runs alone) and returns what
// the start-up's heap left to the system: the process idles as lean as with that GOGC.
func settleGC(ctx context.Context) {
	if settled < 0 {
		return
	}
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(settleAfter):
		}
		debug.SetGCPercent(settled)
		debug.FreeOSMemory()
		klog.InfoS("garbage collector target settled", "percent", settled)
	}()
}

// waitReady returns once the API server answers /readyz with 200 through a component's
// kubeconfig (anyone may read it), and ends the process if the API server ends first.
func waitReady(ctx context.Context, kubeconfig string, apiDone <-chan error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fail(apiserver, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail(apiserver, err)
	}
	for {
		select {
		case err := <-apiDone:
			if err == nil && ctx.Err() != nil {
				klog.Flush()
				os.Exit(0)
			}
			if err == nil {
				err = errors.New("ended before it was ready")
			}
			fail(apiserver, err)
		default:
		}
		code := 0
		client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
		if code == 200 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
