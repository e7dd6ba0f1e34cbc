//! The API access the operator uses, as data. The chart's ClusterRole (or namespaced Roles) is
//! rendered from `charts/a3s-power-operator/files/rbac-rules.yaml`; tests check that file equals
//! [`RULES`] and that every request the reconcilers make in the mocked-API tests is allowed by
//! exactly these rules (and every rule is used). No Secrets: pods mount their own key.

/// One RBAC rule: API group, resources, verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// Rules for the watched namespaces (a ClusterRole, or a Role per namespace).
pub const RULES: &[Rule] = &[
    Rule {
        group: "power.a3s.dev",
        resources: &["inferencemodels"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "power.a3s.dev",
        resources: &["attestationpolicies"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "power.a3s.dev",
        resources: &["inferencemodels/status", "attestationpolicies/status"],
        verbs: &["patch"],
    },
    // ownerReferences with blockOwnerDeletion need update on the owner's finalizers
    // (OwnerReferencesPermissionEnforcement). Server-side apply creates a missing child, hence
    // create next to patch; events are patched when the recorder extends a series.
    Rule {
        group: "power.a3s.dev",
        resources: &["inferencemodels/finalizers"],
        verbs: &["update"],
    },
    Rule {
        group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Rule {
        group: "",
        resources: &["services", "configmaps"],
        verbs: &["list", "watch", "create", "patch"],
    },
    Rule {
        group: "",
        resources: &["pods"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "",
        resources: &["pods/status"],
        verbs: &["patch"],
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Rules in the operator's own namespace (leader election).
pub const LEADER_RULES: &[Rule] = &[Rule {
    group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
}];

/// Whether `rules` allow `verb` on `group`/`resource`.
pub fn allows(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
    rules
        .iter()
        .any(|r| r.group == group && r.resources.contains(&resource) && r.verbs.contains(&verb))
}
