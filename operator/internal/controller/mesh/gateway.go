package mesh

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	caapi "github.com/meshfed/meshfed/operator/api/ca/v1alpha1"
	meshv1 "github.com/meshfed/meshfed/operator/api/v1alpha1"
)

// The gateway's objects live in the mesh namespace, and so do the operator's rights on
// them (Services are read everywhere, for the control plane).
// +kubebuilder:rbac:groups=apps,namespace=meshfed-system,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=meshfed-system,resources=services,verbs=create;update;patch;delete
// +kubebuilder:rbac:groups=policy,namespace=meshfed-system,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,namespace=meshfed-system,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete

// Names of the gateway's objects in the mesh namespace, and of the xDS Service its pods
// reach the control plane through.
const (
	GatewayName    = "meshfed-eastwest-gateway"
	XDSServiceName = "meshfed-xds"
	gatewayAdmin   = 15021
)

// gatewayLabels select the gateway's pods.
func gatewayLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": GatewayName, meshv1.LabelManagedBy: meshv1.ManagedByValue}
}

// GatewayXDSSecret holds the gateway's client certificate for the xDS server (identity
// spiffe://<trust domain>/ns/<mesh namespace>/sa/meshfed-eastwest-gateway), which the Mesh
// controller has cert-manager issue from the member's CA.
const GatewayXDSSecret = "meshfed-eastwest-gateway-xds"

// Where the gateway's pods mount their xDS certificate and the trust bundle.
const (
	gatewayCertDir  = "/var/run/meshfed/xds"
	gatewayTrustDir = "/var/run/meshfed/trust"
)

// GatewayObjects are the Deployment, Service, PodDisruptionBudget and NetworkPolicy of a
// Mesh's gateway, in namespace; the xDS server is the meshfed-xds Service of
// operatorNamespace.
func GatewayObjects(m *meshv1.Mesh, namespace, operatorNamespace, image string) (*appsv1.Deployment, *corev1.Service, *policyv1.PodDisruptionBudget, *networkingv1.NetworkPolicy) {
	gw := m.Spec.EastWestGateway
	port := m.Spec.GatewayPortOrDefault()
	replicas := ptr.Deref(gw.Replicas, 2)
	meta := metav1.ObjectMeta{Namespace: namespace, Name: GatewayName, Labels: gatewayLabels()}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("admin")}},
			PeriodSeconds: 5}
	}
	dep := &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: gatewayLabels()},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: gatewayLabels()}, Spec: corev1.PodSpec{
			// Long enough for the gateway's drain: open connections finish or move.
			TerminationGracePeriodSeconds: ptr.To[int64](40),
			// The gateway talks to no API server (its configuration comes over xDS, with
			// the certificate below): a stolen gateway holds no Kubernetes credential.
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext:              &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Volumes: []corev1.Volume{
				{Name: "xds-certificate", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: GatewayXDSSecret}}},
				{Name: "trust-bundle", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: caapi.TrustBundleConfigMap}}}},
			},
			Containers: []corev1.Container{{
				Name:  "gateway",
				Image: image,
				Args: []string{
					"--xds-address=" + XDSServiceName + "." + operatorNamespace + ".svc:" + strconv.Itoa(int(m.Spec.XDSPortOrDefault())),
					"--xds-cert-dir=" + gatewayCertDir,
					"--xds-trust-bundle=" + gatewayTrustDir + "/" + caapi.TrustBundleKey,
					"--cluster=" + m.Spec.ClusterName,
					"--listen=:" + strconv.Itoa(int(port)),
					"--admin=:" + strconv.Itoa(gatewayAdmin),
					"--drain=30s",
				},
				Ports: []corev1.ContainerPort{{Name: "tls", ContainerPort: port, Protocol: corev1.ProtocolTCP},
					{Name: "admin", ContainerPort: gatewayAdmin, Protocol: corev1.ProtocolTCP}},
				VolumeMounts: []corev1.VolumeMount{{Name: "xds-certificate", MountPath: gatewayCertDir, ReadOnly: true},
					{Name: "trust-bundle", MountPath: gatewayTrustDir, ReadOnly: true}},
				ReadinessProbe: probe("/readyz"),
				LivenessProbe:  probe("/healthz"),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					RunAsNonRoot: ptr.To(true), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}},
		}},
	}}
	svcType := corev1.ServiceType(gw.ServiceType)
	if svcType == "" {
		svcType = corev1.ServiceTypeLoadBalancer
	}
	svc := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:     svcType,
		Selector: gatewayLabels(),
		Ports:    []corev1.ServicePort{{Name: "tls", Port: port, TargetPort: intstr.FromString("tls"), Protocol: corev1.ProtocolTCP}},
	}}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: meta, Spec: policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(1)),
		Selector:     &metav1.LabelSelector{MatchLabels: gatewayLabels()},
	}}
	return dep, svc, pdb, gatewayNetworkPolicy(meta, port)
}

// gatewayNetworkPolicy lets anyone reach the gateway's TLS port and its admin port (probes
// and metrics), and lets the gateway reach only pods (its backends, the xDS server, the
// cluster DNS): where a NetworkPolicy engine runs, a gateway cannot be made to connect to
// anything outside the pod network (the API server, a cloud's metadata server).
func gatewayNetworkPolicy(meta metav1.ObjectMeta, port int32) *networkingv1.NetworkPolicy {
	tcp := ptr.To(corev1.ProtocolTCP)
	return &networkingv1.NetworkPolicy{ObjectMeta: meta, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: gatewayLabels()},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
			{Protocol: tcp, Port: ptr.To(intstr.FromInt32(port))},
			{Protocol: tcp, Port: ptr.To(intstr.FromInt32(gatewayAdmin))},
		}}},
		Egress: []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
		}},
	}}
}

// reconcileGateway keeps (or removes) the gateway's objects and reports its address in
// the Mesh status and the GatewayReady condition.
func (r *Reconciler) reconcileGateway(ctx context.Context, s *scope) (metav1.Condition, error) {
	m := s.mesh
	cond := metav1.Condition{Type: meshv1.ConditionGatewayReady, Status: metav1.ConditionFalse}
	dep, svc, pdb, np := GatewayObjects(m, r.Namespace, r.OperatorNamespace, r.GatewayImage)
	if !ptr.Deref(m.Spec.EastWestGateway.Enabled, true) {
		for _, obj := range []client.Object{dep, svc, pdb, np} {
			if err := r.deleteControlled(ctx, m, obj); err != nil {
				return cond, err
			}
		}
		m.Status.GatewayAddress = ""
		cond.Reason, cond.Message = meshv1.ReasonGatewayDisabled, "spec.eastWestGateway.enabled is false: other networks cannot reach this cluster's services"
		return cond, nil
	}
	if err := r.applyOwned(ctx, m, dep, svc, pdb, np); err != nil {
		return cond, err
	}
	m.Status.GatewayAddress = m.Spec.EastWestGateway.AdvertisedAddress
	if m.Status.GatewayAddress == "" {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if m.Status.GatewayAddress = in.IP; in.IP == "" {
				m.Status.GatewayAddress = in.Hostname
			}
			if m.Status.GatewayAddress != "" {
				break
			}
		}
	}
	var cert corev1.Secret
	certErr := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: GatewayXDSSecret}, &cert)
	switch {
	case dep.Status.AvailableReplicas == 0 && apierrors.IsNotFound(certErr):
		cond.Reason = meshv1.ReasonGatewayUnavailable
		cond.Message = fmt.Sprintf("the gateway's pods wait for their xDS certificate (Secret %s/%s), which the member's CA issues once this cluster is a member of a MeshFederation", r.Namespace, GatewayXDSSecret)
	case dep.Status.AvailableReplicas == 0:
		cond.Reason = meshv1.ReasonGatewayUnavailable
		cond.Message = fmt.Sprintf("Deployment %s/%s has no available replica yet", r.Namespace, GatewayName)
	case m.Status.GatewayAddress == "":
		cond.Reason = meshv1.ReasonNoAddress
		cond.Message = fmt.Sprintf("Service %s/%s has no load-balancer address yet: wait for it, or set spec.eastWestGateway.advertisedAddress", r.Namespace, GatewayName)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, meshv1.ReasonReconciled
		cond.Message = fmt.Sprintf("%d gateway replicas available at %s", dep.Status.AvailableReplicas, m.Status.GatewayAddress)
	}
	return cond, nil
}

// applyOwned creates each object, controlled by the Mesh, or brings back its spec (data)
// and labels; it leaves what the API server set (a Service's ClusterIP and node ports),
// and reads each object back into objs (with its status).
func (r *Reconciler) applyOwned(ctx context.Context, m *meshv1.Mesh, objs ...client.Object) error {
	for _, obj := range objs {
		desired := obj.DeepCopyObject().(client.Object)
		if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, obj, func() error {
			switch o := obj.(type) {
			case *appsv1.Deployment:
				o.Spec = desired.(*appsv1.Deployment).Spec
			case *corev1.Service:
				d := desired.(*corev1.Service)
				o.Spec.Type, o.Spec.Selector, o.Spec.Ports = d.Spec.Type, d.Spec.Selector, mergePorts(o.Spec.Ports, d.Spec.Ports)
			case *corev1.ConfigMap:
				o.Data = desired.(*corev1.ConfigMap).Data
			case *policyv1.PodDisruptionBudget:
				o.Spec = desired.(*policyv1.PodDisruptionBudget).Spec
			case *networkingv1.NetworkPolicy:
				o.Spec = desired.(*networkingv1.NetworkPolicy).Spec
			}
			obj.SetLabels(desired.GetLabels())
			return controllerutil.SetControllerReference(m, obj, r.Client.Scheme())
		}); err != nil {
			return fmt.Errorf("%T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

// deleteControlled deletes obj (found by its name) if the Mesh controls it: an object of
// that name that another owner controls, or a user made, is not the Mesh's to delete.
func (r *Reconciler) deleteControlled(ctx context.Context, m *meshv1.Mesh, obj client.Object) error {
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, m) {
		return nil
	}
	// The UID precondition keeps a stale cache from deleting an object made since.
	err := r.Client.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// mergePorts keeps what the API server set on existing ports (a NodePort) while taking the
// wanted ports.
func mergePorts(have, want []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, len(want))
	for i, p := range want {
		out[i] = p
		for _, h := range have {
			if h.Name == p.Name && h.Port == p.Port {
				out[i].NodePort = h.NodePort
			}
		}
	}
	return out
}
