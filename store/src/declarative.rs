//! Declarative configuration: the managed state (upstreams, plans, APIs with their
//! versions and routes, TLS certificates with their private keys) as one document.
//! Export writes it; import makes the store match it. Import plans every change and
//! checks every reference before writing anything, then applies the plan in one
//! transaction, so a bad file changes nothing and importing the same file twice
//! changes nothing the second time. Import never deletes what the file does not
//! mention.
//!
//! Certificates have no name: a certificate of the file is the stored one that holds
//! its first host the store knows (a host has one certificate), or a new one. A
//! stored certificate whose hosts the file gives to other certificates is deleted,
//! since a host cannot have two; one whose hosts the file does not mention stays.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use turnpike_domain::certificate::{self, CertificateInput};
use turnpike_domain::lifecycle;
use turnpike_domain::model::{RouteSpec, UpstreamSpec, VersionState, Versioning};
use turnpike_domain::network::TargetPolicy;
use turnpike_domain::openapi;
use turnpike_domain::policy::{self, Policies};
use turnpike_domain::validate::{self, ValidationError, Validator};

use crate::apis::ApiInput;
use crate::certificates::Stored;
use crate::entities::{api_versions, apis as api_rows, plans as plan_rows, routes as route_rows, upstreams as up_rows};
use crate::json::from_text;
use crate::plans::PlanInput;
use crate::versions::{VersionInput, state_of};
use crate::{Change, StoreError, apis, certificates, new_id, plans, upstreams, versions};

/// The whole managed configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub upstreams: Vec<UpstreamSpec>,
    #[serde(default)]
    pub plans: Vec<PlanInput>,
    #[serde(default)]
    pub apis: Vec<ApiDocument>,
    /// Left out when there are none, so such a file still reads in older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateDocument>,
}

/// A TLS certificate the gateway presents, with its private key: the document is a
/// backup, and a backup must restore the key. A file that holds one is a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateDocument {
    /// Host names it is presented for (SNI). Left out, they are the DNS names of the
    /// certificate's subjectAltName; an export always writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// PEM: the server certificate first, then any intermediates, in order.
    pub cert_pem: String,
    /// PEM private key of the certificate.
    pub key_pem: String,
}

// The private key must never reach a log line.
impl std::fmt::Debug for CertificateDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateDocument").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

impl CertificateDocument {
    fn input(&self) -> CertificateInput {
        CertificateInput { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone(), hosts: self.hosts.clone() }
    }

    fn hosts_text(&self) -> String {
        self.hosts.as_deref().map(|h| h.join(", ")).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiDocument {
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Version selection by header or query parameter; absent means by path only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub versioning: Versioning,
    #[serde(default)]
    pub versions: Vec<VersionDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionDocument {
    pub label: String,
    pub state: VersionState,
    pub base_path: String,
    /// Upstream name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset_at: Option<DateTime<Utc>>,
    /// Label of the version that replaces this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub policies: Policies,
    /// The stored OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<serde_json::Value>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ApiDocument {
    fn input(&self) -> ApiInput {
        ApiInput {
            name: self.name.clone(),
            slug: self.slug.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            owner: self.owner.clone(),
            versioning: self.versioning.clone(),
        }
    }
}

fn canonical_routes(mut routes: Vec<RouteSpec>) -> Vec<RouteSpec> {
    routes.sort_by(|a, b| (&a.path, &a.methods, &a.host, &a.name).cmp(&(&b.path, &b.methods, &b.host, &b.name)));
    routes
}

/// Reads the whole managed configuration, in a stable order.
pub async fn export(db: &impl ConnectionTrait) -> Result<Document, StoreError> {
    let upstream_rows = up_rows::Entity::find().order_by_asc(up_rows::Column::Name).all(db).await?;
    let upstream_names: HashMap<String, String> =
        upstream_rows.iter().map(|u| (u.id.clone(), u.name.clone())).collect();
    let upstreams = upstream_rows
        .into_iter()
        .map(|u| from_text::<UpstreamSpec>("upstreams.spec", &u.spec))
        .collect::<Result<Vec<_>, _>>()?;
    let plans = plan_rows::Entity::find()
        .order_by_asc(plan_rows::Column::Slug)
        .all(db)
        .await?
        .into_iter()
        .map(|p| plans::record(p).map(|r| r.input))
        .collect::<Result<Vec<_>, _>>()?;
    let mut apis = Vec::new();
    for row in api_rows::Entity::find().order_by_asc(api_rows::Column::Slug).all(db).await? {
        let version_rows = api_versions::Entity::find()
            .filter(api_versions::Column::ApiId.eq(row.id.clone()))
            .order_by_asc(api_versions::Column::Label)
            .all(db)
            .await?;
        let labels: HashMap<String, String> = version_rows.iter().map(|v| (v.id.clone(), v.label.clone())).collect();
        let mut versions = Vec::new();
        for v in version_rows {
            let routes = route_rows::Entity::find()
                .filter(route_rows::Column::VersionId.eq(v.id.clone()))
                .all(db)
                .await?
                .into_iter()
                .map(|r| from_text::<RouteSpec>("routes.spec", &r.spec))
                .collect::<Result<Vec<_>, _>>()?;
            versions.push(VersionDocument {
                state: state_of(&v),
                upstream: v.upstream_id.as_ref().and_then(|id| upstream_names.get(id).cloned()),
                successor: v.successor_id.as_ref().and_then(|id| labels.get(id).cloned()),
                openapi: v
                    .openapi_document
                    .as_deref()
                    .map(|t| from_text("api_versions.openapi_document", t))
                    .transpose()?,
                routes: canonical_routes(routes),
                policies: crate::versions::policies_of(&v),
                label: v.label,
                base_path: v.base_path,
                sunset_at: v.sunset_at,
            });
        }
        let api = apis::record(row)?.input;
        apis.push(ApiDocument {
            slug: api.slug,
            name: api.name,
            description: api.description,
            tags: api.tags,
            owner: api.owner,
            versioning: api.versioning,
            versions,
        });
    }
    let certificates = certificates::all_with_keys(db)
        .await?
        .into_iter()
        .map(|c| CertificateDocument { hosts: Some(c.hosts), cert_pem: c.cert_pem, key_pem: c.key_pem })
        .collect();
    Ok(Document { upstreams, plans, apis, certificates })
}

/// One planned change, in the order it will be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateUpstream(UpstreamSpec),
    UpdateUpstream(UpstreamSpec),
    CreatePlan(PlanInput),
    UpdatePlan(PlanInput),
    CreateApi(ApiInput),
    UpdateApi(ApiInput),
    /// Create or update a version of the API `api_slug`; `changes` says what differs.
    PutVersion {
        api_slug: String,
        version: Box<VersionDocument>,
        exists: bool,
        changes: Vec<String>,
    },
    /// A certificate whose hosts (resolved from the certificate if the file left them
    /// out) the store does not have.
    CreateCertificate(Box<CertificateDocument>),
    /// Replaces the stored certificate `id`; `changes` says what differs.
    UpdateCertificate {
        id: String,
        certificate: Box<CertificateDocument>,
        changes: Vec<String>,
    },
    /// Deletes the stored certificate `id`, whose hosts the file gives to others.
    DeleteCertificate {
        id: String,
        hosts: Vec<String>,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreateUpstream(u) => write!(f, "+ upstream {}", u.name),
            Step::UpdateUpstream(u) => write!(f, "~ upstream {}", u.name),
            Step::CreatePlan(p) => write!(f, "+ plan {}", p.slug),
            Step::UpdatePlan(p) => write!(f, "~ plan {}", p.slug),
            Step::CreateApi(a) => write!(f, "+ api {}", a.slug),
            Step::UpdateApi(a) => write!(f, "~ api {}", a.slug),
            Step::PutVersion { api_slug, version, exists: false, .. } => {
                write!(
                    f,
                    "+ version {api_slug}/{} ({}, {} routes)",
                    version.label,
                    version.state.as_str(),
                    version.routes.len()
                )
            }
            Step::PutVersion { api_slug, version, exists: true, changes } => {
                write!(f, "~ version {api_slug}/{}: {}", version.label, changes.join(", "))
            }
            Step::CreateCertificate(c) => write!(f, "+ certificate {}", c.hosts_text()),
            Step::UpdateCertificate { certificate, changes, .. } => {
                write!(f, "~ certificate {}: {}", certificate.hosts_text(), changes.join(", "))
            }
            Step::DeleteCertificate { hosts, .. } => {
                write!(f, "- certificate {} (the file gives its hosts to other certificates)", hosts.join(", "))
            }
        }
    }
}

/// What an import would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Items of the file that already match the store.
    pub unchanged: usize,
}

fn prefixed(prefix: &str, result: Result<(), Vec<ValidationError>>) -> Result<(), Vec<ValidationError>> {
    result.map_err(|errors| {
        errors.into_iter().map(|e| ValidationError::new(format!("{prefix}.{}", e.field), e.message)).collect()
    })
}

fn one(prefix: &str, result: Result<(), ValidationError>) -> Result<(), Vec<ValidationError>> {
    prefixed(prefix, result.map_err(|e| vec![e]))
}

fn duplicates<'a>(v: &mut Validator, what: &str, names: impl Iterator<Item = (String, &'a str)>) {
    let mut seen = BTreeSet::new();
    for (field, name) in names {
        if !seen.insert(name) {
            v.check(Err(ValidationError::new(field, format!("duplicate {what} '{name}'"))));
        }
    }
}

/// Checks the document on its own: every value valid, no duplicates, references
/// between its parts resolvable (given the names that exist in the store).
fn check_document(
    doc: &Document,
    stored_upstreams: &BTreeSet<String>,
    targets: &TargetPolicy,
) -> Result<(), StoreError> {
    let mut v = Validator::new();
    for (i, u) in doc.upstreams.iter().enumerate() {
        v.check_all(prefixed(&format!("upstreams[{i}]"), validate::upstream(u)));
        v.check_all(prefixed(&format!("upstreams[{i}]"), validate::upstream_targets(u, targets)));
    }
    duplicates(
        &mut v,
        "upstream",
        doc.upstreams.iter().enumerate().map(|(i, u)| (format!("upstreams[{i}].name"), u.name.as_str())),
    );
    for (i, p) in doc.plans.iter().enumerate() {
        let at = format!("plans[{i}]");
        v.check_all(one(&at, validate::slug("slug", &p.slug)));
        v.check_all(one(&at, validate::name("name", &p.name)));
        if let Some(r) = &p.rate_limit {
            v.check_all(one(&at, validate::rate_limit("rate_limit", r)));
        }
        if let Some(q) = &p.quota {
            v.check_all(one(&at, validate::quota("quota", q)));
        }
    }
    duplicates(
        &mut v,
        "plan",
        doc.plans.iter().enumerate().map(|(i, p)| (format!("plans[{i}].slug"), p.slug.as_str())),
    );
    duplicates(&mut v, "api", doc.apis.iter().enumerate().map(|(i, a)| (format!("apis[{i}].slug"), a.slug.as_str())));
    let upstream_names: BTreeSet<&str> =
        doc.upstreams.iter().map(|u| u.name.as_str()).chain(stored_upstreams.iter().map(String::as_str)).collect();
    let mut base_paths = Vec::new();
    for (i, api) in doc.apis.iter().enumerate() {
        let at = format!("apis[{i}]");
        v.check_all(one(&at, validate::slug("slug", &api.slug)));
        v.check_all(one(&at, validate::name("name", &api.name)));
        v.check_all(one(&at, validate::tags("tags", &api.tags)));
        v.check_all(prefixed(&at, validate::versioning(&api.versioning)));
        duplicates(
            &mut v,
            "version",
            api.versions.iter().enumerate().map(|(j, ver)| (format!("{at}.versions[{j}].label"), ver.label.as_str())),
        );
        let labels: BTreeSet<&str> = api.versions.iter().map(|ver| ver.label.as_str()).collect();
        for (j, ver) in api.versions.iter().enumerate() {
            let at = format!("{at}.versions[{j}]");
            v.check_all(one(&at, validate::label("label", &ver.label)));
            v.check_all(one(&at, validate::base_path("base_path", &ver.base_path)));
            base_paths.push((format!("{at}.base_path"), ver.base_path.as_str()));
            v.check_all(prefixed(&at, policy::validate(&ver.policies)));
            for (k, route) in ver.routes.iter().enumerate() {
                v.check_all(prefixed(&format!("{at}.routes[{k}]"), validate::route(route)));
            }
            match &ver.upstream {
                Some(name) if !upstream_names.contains(name.as_str()) => {
                    v.check(Err(ValidationError::new(format!("{at}.upstream"), format!("no upstream named '{name}'"))));
                }
                None if ver.state.is_live() => {
                    v.check(Err(ValidationError::new(format!("{at}.upstream"), "a live version needs an upstream")));
                }
                _ => {}
            }
            if ver.state.is_live() && ver.routes.is_empty() {
                v.check(Err(ValidationError::new(format!("{at}.routes"), "a live version needs at least one route")));
            }
            if ver.state == VersionState::Deprecated && ver.sunset_at.is_none() {
                v.check(Err(ValidationError::new(
                    format!("{at}.sunset_at"),
                    "a deprecated version needs a sunset date",
                )));
            }
            // As through the admin API: publishing clears the sunset and the successor,
            // retiring keeps them, drafts never have them.
            let sunsetting = matches!(ver.state, VersionState::Deprecated | VersionState::Retired);
            if !sunsetting && ver.sunset_at.is_some() {
                v.check(Err(ValidationError::new(
                    format!("{at}.sunset_at"),
                    "only deprecated and retired versions have a sunset date",
                )));
            }
            if !sunsetting && ver.successor.is_some() {
                v.check(Err(ValidationError::new(
                    format!("{at}.successor"),
                    "only deprecated and retired versions have a successor",
                )));
            }
            if let Some(successor) = &ver.successor
                && (!labels.contains(successor.as_str()) || successor == &ver.label)
            {
                v.check(Err(ValidationError::new(
                    format!("{at}.successor"),
                    format!("no other version '{successor}' of this API in the file"),
                )));
            }
            if let Some(doc) = &ver.openapi
                && let Err(e) = openapi::import(&doc.to_string())
            {
                v.check(Err(ValidationError::new(format!("{at}.openapi"), e.to_string())));
            }
        }
        // After the API's versions, so that a clash with one of them is reported here.
        if let Some(selector) = api.versioning.selector() {
            base_paths.push((format!("{at}.versioning.base_path"), selector.base_path.as_str()));
        }
    }
    duplicates(&mut v, "base path", base_paths.into_iter());
    v.finish().map_err(StoreError::Invalid)
}

/// Whether lifecycle transitions lead from `from` to `to` (staying put counts).
fn reachable(from: VersionState, to: VersionState) -> bool {
    let mut seen = vec![from];
    let mut i = 0;
    while i < seen.len() {
        for t in lifecycle::allowed_transitions(seen[i]) {
            if !seen.contains(&t.target()) {
                seen.push(t.target());
            }
        }
        i += 1;
    }
    seen.contains(&to)
}

/// Checks the document's certificates with the admin API's rules and works out the
/// steps that make the store's certificates match them (see the module's notes on
/// how a certificate of the file finds its stored one). Returns the steps and the
/// number of certificates that already match.
fn plan_certificates(
    doc: &[CertificateDocument],
    stored: &[Stored],
    now: DateTime<Utc>,
) -> Result<(Vec<Step>, usize), Vec<ValidationError>> {
    let mut errors = Vec::new();
    // Each certificate of the file with the hosts it will have, once valid.
    let mut resolved: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, c) in doc.iter().enumerate() {
        // One the store holds as it is stays valid for as long as the store keeps it
        // (the admin API does not look at a certificate it is not given either), so
        // one that expired since it was uploaded does not block the rest of the file.
        if let Some(hosts) = &c.hosts
            && stored.iter().any(|s| s.hosts == *hosts && s.cert_pem == c.cert_pem && s.key_pem == c.key_pem)
        {
            resolved.push((i, hosts.clone()));
            continue;
        }
        match certificate::validate(&c.input(), now) {
            Ok(accepted) => resolved.push((i, accepted.hosts)),
            Err(invalid) => {
                // Named by position and, when the file gives them, by hosts.
                let named = match &c.hosts {
                    Some(hosts) if !hosts.is_empty() => format!(" (certificate for {})", hosts.join(", ")),
                    _ => String::new(),
                };
                errors.extend(invalid.into_iter().map(|e| {
                    ValidationError::new(format!("certificates[{i}].{}", e.field), format!("{}{named}", e.message))
                }));
            }
        }
    }
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    for (i, hosts) in &resolved {
        for host in hosts {
            if let Some(first) = first_with.insert(host, *i)
                && first != *i
            {
                errors.push(ValidationError::new(
                    format!("certificates[{i}].hosts"),
                    format!("'{host}' is also a host of certificates[{first}]; a host has one certificate"),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let owner: HashMap<&str, usize> =
        stored.iter().enumerate().flat_map(|(k, s)| s.hosts.iter().map(move |h| (h.as_str(), k))).collect();
    let mut claimed = vec![false; stored.len()];
    let (mut updates, mut creates, mut unchanged) = (Vec::new(), Vec::new(), 0);
    for (i, hosts) in &resolved {
        let wanted = CertificateDocument { hosts: Some(hosts.clone()), ..doc[*i].clone() };
        let Some(k) = hosts.iter().filter_map(|h| owner.get(h.as_str()).copied()).find(|k| !claimed[*k]) else {
            creates.push(Step::CreateCertificate(Box::new(wanted)));
            continue;
        };
        claimed[k] = true;
        let old = &stored[k];
        let mut changes = Vec::new();
        if old.hosts != *hosts {
            changes.push(format!("hosts [{}] -> [{}]", old.hosts.join(", "), hosts.join(", ")));
        }
        if old.cert_pem != wanted.cert_pem {
            changes.push("certificate".to_owned());
        }
        if old.key_pem != wanted.key_pem {
            changes.push("key".to_owned());
        }
        if changes.is_empty() {
            unchanged += 1;
        } else {
            updates.push(Step::UpdateCertificate { id: old.id.clone(), certificate: Box::new(wanted), changes });
        }
    }
    // A stored certificate that lost a host to another certificate of the file goes.
    let deletes = stored
        .iter()
        .zip(&claimed)
        .filter(|(s, claimed)| !**claimed && s.hosts.iter().any(|h| first_with.contains_key(h.as_str())))
        .map(|(s, _)| Step::DeleteCertificate { id: s.id.clone(), hosts: s.hosts.clone() });
    let steps = deletes.chain(updates).chain(creates).collect();
    Ok((steps, unchanged))
}

/// Works out what importing `doc` would change, refusing the whole document if any
/// part of it is invalid or cannot be reached from the current state. Upstream
/// targets are judged by `targets` (the operator's policy: [`Change::target_policy`]),
/// so a dry run refuses what the import would.
pub async fn plan(db: &impl ConnectionTrait, doc: &Document, targets: &TargetPolicy) -> Result<Plan, StoreError> {
    let current = export(db).await?;
    let stored_upstreams: BTreeSet<String> = current.upstreams.iter().map(|u| u.name.clone()).collect();
    let stored_certificates = certificates::all_with_keys(db).await?;
    let (certificate_steps, certificates_unchanged) = match (
        check_document(doc, &stored_upstreams, targets),
        plan_certificates(&doc.certificates, &stored_certificates, Utc::now()),
    ) {
        (Ok(()), Ok(planned)) => planned,
        (Err(StoreError::Invalid(mut errors)), Err(more)) => {
            errors.extend(more);
            return Err(StoreError::Invalid(errors));
        }
        (Err(e), _) => return Err(e),
        (Ok(()), Err(errors)) => return Err(StoreError::Invalid(errors)),
    };
    let mut plan = Plan::default();
    let mut note = |step: Option<Step>| match step {
        Some(step) => plan.steps.push(step),
        None => plan.unchanged += 1,
    };
    let old_upstreams: HashMap<&str, &UpstreamSpec> = current.upstreams.iter().map(|u| (u.name.as_str(), u)).collect();
    for u in &doc.upstreams {
        note(match old_upstreams.get(u.name.as_str()) {
            None => Some(Step::CreateUpstream(u.clone())),
            Some(old) if *old != u => Some(Step::UpdateUpstream(u.clone())),
            Some(_) => None,
        });
    }
    let old_plans: HashMap<&str, &PlanInput> = current.plans.iter().map(|p| (p.slug.as_str(), p)).collect();
    for p in &doc.plans {
        note(match old_plans.get(p.slug.as_str()) {
            None => Some(Step::CreatePlan(p.clone())),
            Some(old) if *old != p => Some(Step::UpdatePlan(p.clone())),
            Some(_) => None,
        });
    }
    let old_apis: HashMap<&str, &ApiDocument> = current.apis.iter().map(|a| (a.slug.as_str(), a)).collect();
    let mut errors = Vec::new();
    // Base paths other APIs' versions hold in the store, which the file must not take.
    let stored_paths: HashMap<&str, (&str, &str)> = current
        .apis
        .iter()
        .flat_map(|a| a.versions.iter().map(move |v| (v.base_path.as_str(), (a.slug.as_str(), v.label.as_str()))))
        .collect();
    // Base paths where other APIs in the store select versions by header or query.
    let stored_selectors: HashMap<&str, &str> = current
        .apis
        .iter()
        .filter_map(|a| a.versioning.selector().map(|s| (s.base_path.as_str(), a.slug.as_str())))
        .collect();
    for (i, api) in doc.apis.iter().enumerate() {
        if let Some(selector) = api.versioning.selector()
            && let Some((slug, label)) = stored_paths.get(selector.base_path.as_str())
            && *slug != api.slug
        {
            errors.push(ValidationError::new(
                format!("apis[{i}].versioning.base_path"),
                format!("'{}' is used by version {slug}/{label}", selector.base_path),
            ));
        }
        let old = old_apis.get(api.slug.as_str());
        note(match old {
            None => Some(Step::CreateApi(api.input())),
            Some(old) if old.input() != api.input() => Some(Step::UpdateApi(api.input())),
            Some(_) => None,
        });
        let old_versions: BTreeMap<&str, &VersionDocument> =
            old.map(|o| o.versions.iter().map(|v| (v.label.as_str(), v)).collect()).unwrap_or_default();
        for (j, ver) in api.versions.iter().enumerate() {
            let at = format!("apis[{i}].versions[{j}]");
            if let Some((slug, label)) = stored_paths.get(ver.base_path.as_str())
                && (*slug != api.slug || *label != ver.label)
            {
                errors.push(ValidationError::new(
                    format!("{at}.base_path"),
                    format!("'{}' is used by version {slug}/{label}", ver.base_path),
                ));
            }
            if let Some(slug) = stored_selectors.get(ver.base_path.as_str())
                && *slug != api.slug
            {
                errors.push(ValidationError::new(
                    format!("{at}.base_path"),
                    format!("'{}' is where API '{slug}' selects its versions", ver.base_path),
                ));
            }
            let desired = VersionDocument {
                routes: canonical_routes(ver.routes.clone()),
                sunset_at: ver.sunset_at.map(crate::json::stored_precision),
                ..ver.clone()
            };
            let Some(existing) = old_versions.get(ver.label.as_str()) else {
                note(Some(Step::PutVersion {
                    api_slug: api.slug.clone(),
                    version: Box::new(desired),
                    exists: false,
                    changes: vec![],
                }));
                continue;
            };
            if !reachable(existing.state, ver.state) {
                errors.push(ValidationError::new(
                    format!("{at}.state"),
                    format!("cannot go from {} to {}", existing.state.as_str(), ver.state.as_str()),
                ));
                continue;
            }
            if ver.state == VersionState::Deprecated
                && existing.state != VersionState::Deprecated
                && let Some(sunset_at) = ver.sunset_at
                && let Err(e) = lifecycle::check_sunset(sunset_at, Utc::now())
            {
                errors.push(ValidationError::new(format!("{at}.sunset_at"), e.to_string()));
                continue;
            }
            let changes = version_changes(existing, &desired);
            if existing.state == VersionState::Retired && !changes.is_empty() {
                errors.push(ValidationError::new(at, "a retired version is read-only"));
                continue;
            }
            note((!changes.is_empty()).then(|| Step::PutVersion {
                api_slug: api.slug.clone(),
                version: Box::new(desired),
                exists: true,
                changes,
            }));
        }
    }
    if !errors.is_empty() {
        return Err(StoreError::Invalid(errors));
    }
    plan.steps.extend(certificate_steps);
    plan.unchanged += certificates_unchanged;
    Ok(plan)
}

fn version_changes(old: &VersionDocument, new: &VersionDocument) -> Vec<String> {
    let mut changes = Vec::new();
    if old.state != new.state {
        changes.push(format!("state {} -> {}", old.state.as_str(), new.state.as_str()));
    }
    if old.base_path != new.base_path {
        changes.push(format!("base_path {} -> {}", old.base_path, new.base_path));
    }
    if old.upstream != new.upstream {
        changes.push("upstream".into());
    }
    if old.sunset_at != new.sunset_at {
        changes.push("sunset_at".into());
    }
    if old.successor != new.successor {
        changes.push("successor".into());
    }
    if old.routes != new.routes {
        changes.push(format!("routes {} -> {}", old.routes.len(), new.routes.len()));
    }
    if old.policies != new.policies {
        changes.push("policies".into());
    }
    if old.openapi != new.openapi {
        changes.push("openapi document".into());
    }
    changes
}

/// Applies a plan made by [`plan`] inside `change`.
pub async fn apply(change: &Change<'_>, plan: &Plan) -> Result<(), StoreError> {
    let db = change.txn();
    let mut successors = Vec::new();
    for step in &plan.steps {
        match step {
            Step::CreateUpstream(u) => drop(upstreams::create(change, u.clone()).await?),
            Step::UpdateUpstream(u) => drop(upstreams::replace(change, &u.name, u.clone()).await?),
            Step::CreatePlan(p) => drop(plans::create(change, p.clone()).await?),
            Step::UpdatePlan(p) => drop(plans::replace(change, &p.slug, p.clone()).await?),
            Step::CreateApi(a) => drop(apis::create(change, a.clone()).await?),
            Step::UpdateApi(a) => drop(apis::replace(change, &a.slug, a.clone()).await?),
            Step::PutVersion { api_slug, version, exists, .. } => {
                let api = apis::find(db, api_slug).await?;
                let input = VersionInput {
                    label: version.label.clone(),
                    base_path: Some(version.base_path.clone()),
                    upstream_id: version.upstream.clone(),
                    policies: version.policies.clone(),
                };
                let id = if *exists {
                    let model = versions::find(db, &api, &version.label).await?;
                    let patch = serde_json::json!({"base_path": version.base_path, "upstream_id": version.upstream});
                    // Retired versions are read-only, so only route through patch when live or draft.
                    if state_of(&model) != VersionState::Retired {
                        versions::patch(change, &api, &model.id, &patch).await?;
                    }
                    model.id
                } else {
                    versions::create(change, &api, input).await?.id
                };
                put_version_content(change, &id, version).await?;
                if let Some(successor) = &version.successor {
                    successors.push((api, id, successor.clone()));
                }
            }
            Step::CreateCertificate(c) => put_certificate(change, None, c).await?,
            Step::UpdateCertificate { id, certificate, .. } => put_certificate(change, Some(id), certificate).await?,
            Step::DeleteCertificate { id, .. } => certificates::delete(change, id).await?,
        }
    }
    // Checked once all are written: a host may move from one certificate to another.
    if plan.steps.iter().any(|s| matches!(s, Step::CreateCertificate(_) | Step::UpdateCertificate { .. })) {
        certificates::ensure_unique_hosts(db).await?;
    }
    // Successors may be created later in the file than the versions naming them.
    for (api, id, successor) in successors {
        let successor = versions::find(db, &api, &successor).await?;
        let mut active: api_versions::ActiveModel = api_versions::Entity::find_by_id(id.clone())
            .one(db)
            .await?
            .ok_or_else(|| StoreError::not_found("version", id))?
            .into();
        active.successor_id = Set(Some(successor.id));
        active.update(db).await?;
    }
    Ok(())
}

/// Writes a certificate of the plan, validated again as it is written.
async fn put_certificate(change: &Change<'_>, id: Option<&str>, c: &CertificateDocument) -> Result<(), StoreError> {
    let input = c.input();
    let accepted = certificate::validate(&input, Utc::now())?;
    certificates::put_accepted(change, id, input, &accepted).await
}

/// Sets a version's state, dates, document and routes to the file's. States are
/// restored as written (the plan has checked they are reachable), which is what
/// lets an export be imported into an empty store.
async fn put_version_content(change: &Change<'_>, id: &str, version: &VersionDocument) -> Result<(), StoreError> {
    let db = change.txn();
    let model = api_versions::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("version", id))?;
    let stored_routes = route_rows::Entity::find().filter(route_rows::Column::VersionId.eq(id)).all(db).await?;
    let routes =
        stored_routes.iter().map(|r| from_text::<RouteSpec>("routes.spec", &r.spec)).collect::<Result<Vec<_>, _>>()?;
    if canonical_routes(routes) != version.routes {
        route_rows::Entity::delete_many().filter(route_rows::Column::VersionId.eq(id)).exec(db).await?;
        let now = Utc::now();
        for spec in &version.routes {
            route_rows::ActiveModel {
                id: Set(new_id()),
                version_id: Set(id.to_owned()),
                spec: Set(serde_json::to_string(spec).expect("route specs serialize")),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(db)
            .await?;
        }
    }
    let now = Utc::now();
    let was = state_of(&model);
    let mut active: api_versions::ActiveModel = model.into();
    active.state = Set(version.state.as_str().into());
    active.sunset_at = Set(version.sunset_at);
    active.openapi_document = Set(version.openapi.as_ref().map(|d| d.to_string()));
    active.policies = Set(crate::json::to_text(&version.policies));
    match version.state {
        VersionState::Deprecated if was != VersionState::Deprecated => active.deprecated_at = Set(Some(now)),
        VersionState::Draft | VersionState::Published => active.deprecated_at = Set(None),
        _ => {}
    }
    if version.successor.is_none() {
        active.successor_id = Set(None);
    }
    active.updated_at = Set(now);
    active.update(db).await?;
    change
        .audit(
            "version.import",
            "version",
            id,
            serde_json::json!({"state": version.state.as_str(), "routes": version.routes.len()}),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use VersionState::*;

    #[test]
    fn reachability_follows_the_lifecycle() {
        assert!(reachable(Draft, Retired));
        assert!(reachable(Draft, Deprecated));
        assert!(reachable(Deprecated, Published));
        assert!(!reachable(Published, Draft));
        assert!(!reachable(Retired, Published));
        assert!(reachable(Retired, Retired));
    }

    /// Replays the fuzz seed corpus (`fuzz/corpus/declarative`): every file parses
    /// or fails with an error, and alias bombs are refused rather than expanded.
    #[test]
    fn declarative_corpus_parses_or_fails_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/declarative");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = yaml_serde::from_str::<Document>(&text);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let valid = ["minimal.yaml", "certificates.yaml"].contains(&name.as_str());
            assert_eq!(parsed.is_ok(), valid, "{name}: {:?}", parsed.err());
            if name == "certificates.yaml" {
                let doc = parsed.unwrap();
                assert_eq!(doc.certificates.len(), 2);
                assert_eq!(doc.certificates[0].hosts.as_deref(), Some(&["api.example.com".to_owned()][..]));
                assert!(doc.certificates[1].hosts.is_none() && doc.certificates[1].key_pem.contains("PRIVATE KEY"));
                assert!(!format!("{doc:?}").contains("PRIVATE KEY"), "Debug shows a key");
            }
            seen += 1;
        }
        assert!(seen >= 8, "corpus went missing");
    }
}
