// Package admission is Vessel's admission webhook: it decides, on pod
// creation, whether a pod runs on Vessel and through which profile, and
// rewrites it to do so; and it validates VesselProfile and Subnet writes.
// It is an http.Handler with its dependencies behind small interfaces, so
// it can be served by `vessel up`, `vessel controller` or a test.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vesselv1 "github.com/vessel-dev/vessel/api/v1"
	"github.com/vessel-dev/vessel/internal/profile"
)

// Paths the handler serves; WebhookOptions points the webhook
// configurations at them.
const (
	PathMutatePods          = "/mutate/pods"
	PathValidateProfiles    = "/validate/vesselprofiles"
	PathValidateSubnets     = "/validate/subnets"
	defaultMaxRequestBytes  = 7 << 20 // a pod may be 1.5 MiB in etcd; an UPDATE review carries two objects
	admissionReviewAPIGroup = "admission.k8s.io/v1"
)

// ProfileLister lists the cluster's VesselProfiles, typically from an
// informer cache. It must be safe for concurrent use and should not block
// on the network for long; the handler does not modify what it returns.
type ProfileLister interface {
	ListProfiles(ctx context.Context) ([]vesselv1.VesselProfile, error)
}

// SubnetLister lists the cluster's Subnets, with the same contract as
// ProfileLister.
type SubnetLister interface {
	ListSubnets(ctx context.Context) ([]vesselv1.Subnet, error)
}

// Authorizer answers whether a user may launch pods through a profile,
// that is, holds RBAC verb "use" on vesselprofiles/<profile> in group
// vessel.dev. It must be safe for concurrent use and honour ctx, as the
// apiserver stops waiting for the webhook after its timeout. An error means
// the answer is unknown, not "no".
type Authorizer interface {
	CanUse(ctx context.Context, user authenticationv1.UserInfo, profile string) (bool, error)
}

// Config tunes the handler. The zero value is usable.
type Config struct {
	// Isolation is written to pods' vessel.dev/isolation annotation; it is
	// what this installation's runtime provides. Default microvm.
	Isolation vesselv1.Isolation
	// Limits bound profiles; zero fields take the defaults.
	Limits profile.Limits
	// MaxRequestBytes bounds an AdmissionReview body. Default 7 MiB.
	MaxRequestBytes int64
	// Logger receives one record per decision. Default slog.Default().
	Logger *slog.Logger
}

// Handler serves the admission webhook. Create it with New.
type Handler struct {
	cfg      Config
	profiles ProfileLister
	subnets  SubnetLister
	authz    Authorizer
	mux      *http.ServeMux
}

// New returns the webhook handler. All three dependencies are required.
func New(cfg Config, profiles ProfileLister, subnets SubnetLister, authz Authorizer) (*Handler, error) {
	if profiles == nil || subnets == nil || authz == nil {
		return nil, errors.New("new admission handler: profile lister, subnet lister and authorizer are all required")
	}
	switch cfg.Isolation {
	case "":
		cfg.Isolation = vesselv1.IsolationMicroVM
	case vesselv1.IsolationMicroVM, vesselv1.IsolationOCI:
	default:
		return nil, fmt.Errorf("new admission handler: isolation %q is not %s or %s", cfg.Isolation, vesselv1.IsolationMicroVM, vesselv1.IsolationOCI)
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = defaultMaxRequestBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, profiles: profiles, subnets: subnets, authz: authz, mux: http.NewServeMux()}
	h.mux.Handle("POST "+PathMutatePods, h.review(h.mutatePod))
	h.mux.Handle("POST "+PathValidateProfiles, h.review(h.validateProfile))
	h.mux.Handle("POST "+PathValidateSubnets, h.review(h.validateSubnet))
	return h, nil
}

// ServeHTTP routes to the webhook for the request's path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// decideFunc turns one admission request into a response. It must not
// panic on any input the apiserver could send, and returns a response
// without UID (review fills it in).
type decideFunc func(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// review wraps a decision in the AdmissionReview envelope: it checks the
// HTTP request, decodes the review, and answers with the same UID. Bodies
// that are not an admission.k8s.io/v1 AdmissionReview get 400, never a
// decision.
func (h *Handler) review(decide decideFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		log := h.cfg.Logger.With("path", r.URL.Path)
		defer func() {
			// A bug in a decision must cost one request, not the process
			// that also serves the rest of the control plane.
			if v := recover(); v != nil {
				log.Error("admission decision panicked", "panic", v)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()

		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxRequestBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, fmt.Sprintf("AdmissionReview larger than %d bytes", tooLarge.Limit), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		req, err := decodeReview(body)
		if err != nil {
			log.Info("bad AdmissionReview", "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}

		resp := decide(r.Context(), req)
		resp.UID = req.UID
		// Denials are user-visible events worth keeping; admissions are the
		// common case and only interesting when debugging.
		level := slog.LevelDebug
		if !resp.Allowed {
			level = slog.LevelInfo
		}
		log.Log(r.Context(), level, "admission decided", "uid", req.UID, "kind", req.Kind.Kind, "operation", req.Operation,
			"namespace", req.Namespace, "name", req.Name, "allowed", resp.Allowed,
			"message", resultMessage(resp), "latency", time.Since(start))

		out, err := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: admissionReviewAPIGroup, Kind: "AdmissionReview"},
			Response: resp,
		})
		if err != nil {
			log.Error("encode AdmissionReview response", "uid", req.UID, "err", err)
			http.Error(w, "encode response", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

// decodeReview returns the request of an admission.k8s.io/v1
// AdmissionReview, refusing anything else.
func decodeReview(body []byte) (*admissionv1.AdmissionRequest, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decode AdmissionReview: %w", err)
	}
	if review.APIVersion != admissionReviewAPIGroup || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("decode AdmissionReview: got apiVersion %q kind %q, want %s AdmissionReview (set admissionReviewVersions: [v1])",
			review.APIVersion, review.Kind, admissionReviewAPIGroup)
	}
	if review.Request == nil || review.Request.UID == "" {
		return nil, errors.New("decode AdmissionReview: request with a uid is required")
	}
	return review.Request, nil
}

func resultMessage(resp *admissionv1.AdmissionResponse) string {
	if resp.Result == nil {
		return ""
	}
	return resp.Result.Message
}

// allow admits unchanged.
func allow() *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true}
}

// deny refuses with an HTTP-like code and the message kubectl shows.
func deny(code int32, message string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reasonFor(code), Message: message},
	}
}

func reasonFor(code int32) metav1.StatusReason {
	switch code {
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	default:
		return metav1.StatusReasonInternalError
	}
}
