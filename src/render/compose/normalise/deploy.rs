//! A service's `deploy` section, with the service-level resource shorthands
//! (`cpus`, `mem_limit`, `mem_reservation`, `pids_limit`) folded in.

use super::super::error::LoadError;
use super::fields::{Field, Fields};
use crate::render::model::{
    Deploy, Placement, ResourceAmounts, Resources, RestartPolicy, UpdateConfig,
};

const DEPLOY_KEYS: &[&str] = &[
    "endpoint_mode",
    "labels",
    "mode",
    "placement",
    "replicas",
    "resources",
    "restart_policy",
    "rollback_config",
    "update_config",
];
const UPDATE_KEYS: &[&str] = &[
    "delay",
    "failure_action",
    "max_failure_ratio",
    "monitor",
    "order",
    "parallelism",
];
const RESOURCES_KEYS: &[&str] = &["limits", "reservations"];
const LIMITS_KEYS: &[&str] = &["cpus", "memory", "pids"];
const RESERVATIONS_KEYS: &[&str] = &["cpus", "devices", "generic_resources", "memory"];
const RESTART_KEYS: &[&str] = &["condition", "delay", "max_attempts", "window"];
const PLACEMENT_KEYS: &[&str] = &["constraints", "max_replicas_per_node", "preferences"];
const PREFERENCE_KEYS: &[&str] = &["spread"];
const MODES: &[&str] = &["replicated", "global", "replicated-job", "global-job"];

/// `deploy`, plus the names of the parts that were read but have no meaning here.
pub fn deploy(field: &Field, ignored: &mut Vec<String>) -> Result<Deploy, LoadError> {
    let fields = field.map(DEPLOY_KEYS)?;
    let mode = fields.string("mode")?;
    if let (Some(mode), Some(f)) = (&mode, fields.get("mode"))
        && !MODES.contains(&mode.as_str())
    {
        return Err(f.invalid(format!(
            "deploy mode must be one of {}, got {mode:?}",
            MODES.join(", ")
        )));
    }
    let endpoint_mode = fields.string("endpoint_mode")?;
    if let (Some(endpoint_mode), Some(f)) = (&endpoint_mode, fields.get("endpoint_mode"))
        && !matches!(endpoint_mode.as_str(), "vip" | "dnsrr")
    {
        return Err(f.invalid(format!(
            "endpoint_mode must be `vip` or `dnsrr`, got {endpoint_mode:?}"
        )));
    }
    if let Some(rollback) = fields.get("rollback_config") {
        update_config(&rollback)?;
        ignored.push("deploy.rollback_config".to_string());
    }
    Ok(Deploy {
        mode,
        replicas: fields
            .get("replicas")
            .map(|r| non_negative(&r))
            .transpose()?,
        labels: fields.string_map("labels", &['='])?,
        update_config: fields
            .get("update_config")
            .map(|u| update_config(&u))
            .transpose()?,
        resources: fields
            .get("resources")
            .map(|r| resources(&r, ignored))
            .transpose()?,
        restart_policy: fields
            .get("restart_policy")
            .map(|r| restart_policy(&r))
            .transpose()?,
        placement: fields.get("placement").map(|p| placement(&p)).transpose()?,
        endpoint_mode,
    })
}

/// An integer count that must not be negative (`replicas`, `scale`).
pub fn non_negative(field: &Field) -> Result<i64, LoadError> {
    let value = field.int()?;
    if value < 0 {
        return Err(field.invalid(format!("must not be negative, got {value}")));
    }
    Ok(value)
}

fn update_config(field: &Field) -> Result<UpdateConfig, LoadError> {
    let fields = field.map(UPDATE_KEYS)?;
    let order = fields.string("order")?;
    if let (Some(order), Some(f)) = (&order, fields.get("order"))
        && !matches!(order.as_str(), "stop-first" | "start-first")
    {
        return Err(f.invalid(format!(
            "order must be `stop-first` or `start-first`, got {order:?}"
        )));
    }
    Ok(UpdateConfig {
        parallelism: fields.uint("parallelism")?,
        order,
        delay_ms: fields.duration_ms("delay")?,
        failure_action: fields.string("failure_action")?,
        monitor_ms: fields.duration_ms("monitor")?,
        max_failure_ratio: fields
            .get("max_failure_ratio")
            .map(|f| f.float())
            .transpose()?,
    })
}

fn resources(field: &Field, ignored: &mut Vec<String>) -> Result<Resources, LoadError> {
    let fields = field.map(RESOURCES_KEYS)?;
    let limits = fields
        .get("limits")
        .map(|l| amounts(&l.map(LIMITS_KEYS)?))
        .transpose()?;
    let reservations = match fields.get("reservations") {
        Some(r) => {
            let reservation_fields = r.map(RESERVATIONS_KEYS)?;
            if reservation_fields.get("generic_resources").is_some() {
                ignored.push("deploy.resources.reservations.generic_resources".to_string());
            }
            Some(amounts(&reservation_fields)?)
        }
        None => None,
    };
    Ok(Resources {
        limits,
        reservations,
    })
}

fn amounts(fields: &Fields) -> Result<ResourceAmounts, LoadError> {
    Ok(ResourceAmounts {
        cpus: fields.get("cpus").map(|c| cpus(&c)).transpose()?,
        memory_bytes: fields.get("memory").map(|m| m.bytes()).transpose()?,
        pids: fields.get("pids").map(|p| p.int()).transpose()?,
        devices: fields.get("devices").is_some(),
    })
}

/// CPUs as a number or a string (`0.5`, `"1.5"`), never negative.
pub fn cpus(field: &Field) -> Result<f64, LoadError> {
    let value = field.float()?;
    if value < 0.0 {
        return Err(field.invalid(format!("cpus must not be negative, got {value}")));
    }
    Ok(value)
}

fn restart_policy(field: &Field) -> Result<RestartPolicy, LoadError> {
    let fields = field.map(RESTART_KEYS)?;
    let condition = fields.string("condition")?;
    if let (Some(condition), Some(f)) = (&condition, fields.get("condition"))
        && !matches!(condition.as_str(), "none" | "on-failure" | "any")
    {
        return Err(f.invalid(format!(
            "restart condition must be `none`, `on-failure` or `any`, got {condition:?}"
        )));
    }
    Ok(RestartPolicy {
        condition,
        delay_ms: fields.duration_ms("delay")?,
        max_attempts: fields.uint("max_attempts")?,
        window_ms: fields.duration_ms("window")?,
    })
}

fn placement(field: &Field) -> Result<Placement, LoadError> {
    let fields = field.map(PLACEMENT_KEYS)?;
    let mut spread = Vec::new();
    if let Some(preferences) = fields.get("preferences") {
        for preference in preferences.items()? {
            if let Some(value) = preference.map(PREFERENCE_KEYS)?.string("spread")? {
                spread.push(value);
            }
        }
    }
    Ok(Placement {
        constraints: fields
            .get("constraints")
            .map(|c| c.string_list())
            .transpose()?
            .unwrap_or_default(),
        spread,
        max_replicas_per_node: fields.uint("max_replicas_per_node")?,
    })
}

/// Service-level `cpus`, `mem_limit`, `mem_reservation` and `pids_limit`: each
/// fills the matching `deploy.resources` amount when that is unset.
pub fn fold_service_resources(
    deploy: &mut Option<Box<Deploy>>,
    service: &Fields,
) -> Result<(), LoadError> {
    let cpus = service.get("cpus").map(|c| cpus(&c)).transpose()?;
    let mem_limit = service.get("mem_limit").map(|m| m.bytes()).transpose()?;
    let pids_limit = service.get("pids_limit").map(|p| p.int()).transpose()?;
    let mem_reservation = service
        .get("mem_reservation")
        .map(|m| m.bytes())
        .transpose()?;
    if cpus.is_none() && mem_limit.is_none() && pids_limit.is_none() && mem_reservation.is_none() {
        return Ok(());
    }
    let resources = deploy
        .get_or_insert_with(Box::default)
        .resources
        .get_or_insert_with(Resources::default);
    if cpus.is_some() || mem_limit.is_some() || pids_limit.is_some() {
        let limits = resources
            .limits
            .get_or_insert_with(ResourceAmounts::default);
        limits.cpus = limits.cpus.or(cpus);
        limits.memory_bytes = limits.memory_bytes.or(mem_limit);
        limits.pids = limits.pids.or(pids_limit);
    }
    if mem_reservation.is_some() {
        let reservations = resources
            .reservations
            .get_or_insert_with(ResourceAmounts::default);
        reservations.memory_bytes = reservations.memory_bytes.or(mem_reservation);
    }
    Ok(())
}
