//! `ports` (short and long syntax, ranges expanded) and `expose`.

use super::super::error::LoadError;
use super::super::node::Value;
use super::fields::Field;
use crate::render::model::{ExposedPort, Port};

const PORT_KEYS: &[&str] = &[
    "app_protocol",
    "host_ip",
    "mode",
    "name",
    "protocol",
    "published",
    "target",
];

/// A service's `ports`, one [`Port`] per container port.
/// A published range for a single target (`"6005-6015:80"`) lets the engine pick
/// a free host port; a Service needs one, so the first is used, with a warning.
pub fn ports(field: &Field, warnings: &mut Vec<String>) -> Result<Vec<Port>, LoadError> {
    let mut ports = Vec::new();
    for item in field.items()? {
        let (expanded, narrowed) = match &item.node.value {
            Value::Map(_) => long_port(&item)?,
            Value::String { .. } | Value::Int(_) => short_port(&item)?,
            _ => return Err(item.expected("a string, a number or a mapping")),
        };
        if let Some((first, last)) = narrowed {
            warnings.push(format!(
                "{}: published range {first}-{last} for one container port: using {first}",
                item.path
            ));
        }
        ports.extend(expanded);
    }
    Ok(ports)
}

/// An inclusive port range.
type Range = (u16, u16);

/// Ports of one item, and the published range when it was narrowed to its first port.
type Expanded = (Vec<Port>, Option<Range>);

/// A published range with a single target becomes its first port.
fn narrow(targets: (u16, u16), published: Option<(u16, u16)>) -> (Option<Range>, Option<Range>) {
    match published {
        Some((first, last)) if targets.0 == targets.1 && first != last => {
            (Some((first, first)), Some((first, last)))
        }
        other => (other, None),
    }
}

/// A service's `expose`: `"3000"`, `"3000-3005"`, `"3000/udp"`, `3000`.
pub fn expose(field: &Field) -> Result<Vec<ExposedPort>, LoadError> {
    let mut exposed = Vec::new();
    for item in field.items()? {
        let text = item.string()?;
        let (range, protocol) = split_protocol(&item, &text)?;
        let (first, last) = port_range(&item, range)?;
        exposed.extend((first..=last).map(|port| ExposedPort {
            port,
            protocol: protocol.clone(),
        }));
    }
    Ok(exposed)
}

/// `[[host_ip:]published:]target[/protocol]`, with `[v6]` host addresses and ranges.
fn short_port(item: &Field) -> Result<Expanded, LoadError> {
    let text = item.string()?;
    let (spec, protocol) = split_protocol(item, &text)?;
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once("]:")
                .ok_or_else(|| item.invalid(format!("invalid port {text:?}: unclosed `[`")))?;
            (Some(ip.to_string()), rest)
        }
        None => match spec.matches(':').count() {
            0 | 1 => (None, spec),
            _ => {
                // The last two fields are ports; anything before is the address.
                let cut = spec
                    .rmatch_indices(':')
                    .nth(1)
                    .map(|(i, _)| i)
                    .unwrap_or_default();
                (Some(spec[..cut].to_string()), &spec[cut + 1..])
            }
        },
    };
    let (published, target) = match rest.split_once(':') {
        Some((published, target)) => (Some(published).filter(|p| !p.is_empty()), target),
        None => (None, rest),
    };
    let host_ip = host_ip.filter(|ip| !ip.is_empty());
    let targets = port_range(item, target)?;
    let published = published.map(|p| port_range(item, p)).transpose()?;
    let (published, narrowed) = narrow(targets, published);
    let ports = expand(item, targets, published, |target, published| Port {
        target,
        published,
        protocol: protocol.clone(),
        host_ip: host_ip.clone(),
        ..Port::default()
    })?;
    Ok((ports, narrowed))
}

fn long_port(item: &Field) -> Result<Expanded, LoadError> {
    let fields = item.map(PORT_KEYS)?;
    let target_field = fields
        .get("target")
        .ok_or_else(|| item.schema_error("missing required field `target`"))?;
    let targets = port_range(&target_field, &target_field.string()?)?;
    let published = fields
        .get("published")
        .map(|p| port_range(&p, &p.string()?))
        .transpose()?;
    let protocol = match fields.get("protocol") {
        Some(p) => protocol_name(&p, &p.string()?)?,
        None => "tcp".to_string(),
    };
    let mode = fields.string("mode")?;
    if let (Some(mode), Some(f)) = (&mode, fields.get("mode"))
        && !matches!(mode.as_str(), "host" | "ingress")
    {
        return Err(f.invalid(format!(
            "port mode must be `host` or `ingress`, got {mode:?}"
        )));
    }
    let host_ip = fields.string("host_ip")?;
    let name = fields.string("name")?;
    let app_protocol = fields.string("app_protocol")?;
    let (published, narrowed) = narrow(targets, published);
    let ports = expand(item, targets, published, |target, published| Port {
        target,
        published,
        protocol: protocol.clone(),
        host_ip: host_ip.clone(),
        mode: mode.clone(),
        name: name.clone(),
        app_protocol: app_protocol.clone(),
    })?;
    Ok((ports, narrowed))
}

/// One port per target in the range, paired with the matching published port.
fn expand(
    item: &Field,
    (first, last): (u16, u16),
    published: Option<(u16, u16)>,
    make: impl Fn(u16, Option<u16>) -> Port,
) -> Result<Vec<Port>, LoadError> {
    if let Some((p_first, p_last)) = published
        && p_last - p_first != last - first
    {
        return Err(item.invalid(format!(
            "published range {p_first}-{p_last} and target range {first}-{last} have different lengths"
        )));
    }
    Ok((first..=last)
        .map(|target| {
            let published = published.map(|(p_first, _)| p_first + (target - first));
            make(target, published)
        })
        .collect())
}

fn split_protocol<'t>(item: &Field, text: &'t str) -> Result<(&'t str, String), LoadError> {
    match text.rsplit_once('/') {
        Some((spec, protocol)) => Ok((spec, protocol_name(item, protocol)?)),
        None => Ok((text, "tcp".to_string())),
    }
}

fn protocol_name(item: &Field, protocol: &str) -> Result<String, LoadError> {
    let lower = protocol.to_ascii_lowercase();
    match lower.as_str() {
        "tcp" | "udp" | "sctp" => Ok(lower),
        _ => Err(item.invalid(format!(
            "port protocol must be tcp, udp or sctp, got {protocol:?}"
        ))),
    }
}

/// `80` or `8000-8002`, each port in 1..=65535.
fn port_range(item: &Field, text: &str) -> Result<(u16, u16), LoadError> {
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port_number(item, a)?, port_number(item, b)?),
        None => {
            let port = port_number(item, text)?;
            (port, port)
        }
    };
    if last < first {
        return Err(item.invalid(format!("port range {text:?} ends before it starts")));
    }
    Ok((first, last))
}

fn port_number(item: &Field, text: &str) -> Result<u16, LoadError> {
    match text.trim().parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port as u16),
        Ok(port) => Err(item.invalid(format!("port {port} is out of range (1-65535)"))),
        Err(_) => Err(item.invalid(format!("invalid port {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error_of, parse_node};
    use super::*;
    use serde_json::json;

    fn ports_of(yaml: &str) -> serde_json::Value {
        let node = parse_node(yaml);
        let field = Field::new(&node, "services.web.ports");
        serde_json::to_value(ports(&field, &mut Vec::new()).unwrap()).unwrap()
    }

    fn port_error(yaml: &str) -> String {
        let node = parse_node(yaml);
        let field = Field::new(&node, "services.web.ports");
        error_of(ports(&field, &mut Vec::new()))
    }

    #[test]
    fn short_syntax() {
        assert_eq!(
            ports_of(
                r#"["80", 81, "8080:80", "8081:81/udp", "127.0.0.1:8082:82", "[::1]:8083:83",
                    "127.0.0.1::84", "85/SCTP"]"#
            ),
            json!([
                {"target": 80, "protocol": "tcp"},
                {"target": 81, "protocol": "tcp"},
                {"target": 80, "published": 8080, "protocol": "tcp"},
                {"target": 81, "published": 8081, "protocol": "udp"},
                {"target": 82, "published": 8082, "protocol": "tcp", "hostIp": "127.0.0.1"},
                {"target": 83, "published": 8083, "protocol": "tcp", "hostIp": "::1"},
                {"target": 84, "protocol": "tcp", "hostIp": "127.0.0.1"},
                {"target": 85, "protocol": "sctp"},
            ])
        );
    }

    #[test]
    fn short_ranges_expand() {
        assert_eq!(
            ports_of(r#"["8000-8002:80-82", "3000-3001", "127.0.0.1:9090-9091:8080-8081/udp"]"#),
            json!([
                {"target": 80, "published": 8000, "protocol": "tcp"},
                {"target": 81, "published": 8001, "protocol": "tcp"},
                {"target": 82, "published": 8002, "protocol": "tcp"},
                {"target": 3000, "protocol": "tcp"},
                {"target": 3001, "protocol": "tcp"},
                {"target": 8080, "published": 9090, "protocol": "udp", "hostIp": "127.0.0.1"},
                {"target": 8081, "published": 9091, "protocol": "udp", "hostIp": "127.0.0.1"},
            ])
        );
    }

    #[test]
    fn long_syntax() {
        let yaml = r#"
- target: 80
  published: "8080"
  protocol: udp
  mode: host
  host_ip: 0.0.0.0
  name: web
  app_protocol: http
- {target: "81", published: 8081}
- {target: 82, published: "9000-9005"}
- {target: 90}
"#;
        assert_eq!(
            ports_of(yaml),
            json!([
                {"target": 80, "published": 8080, "protocol": "udp", "mode": "host",
                 "hostIp": "0.0.0.0", "name": "web", "appProtocol": "http"},
                {"target": 81, "published": 8081, "protocol": "tcp"},
                {"target": 82, "published": 9000, "protocol": "tcp"},
                {"target": 90, "protocol": "tcp"},
            ])
        );
    }

    #[test]
    fn published_range_for_one_target_uses_its_first_port() {
        let node = parse_node(r#"["6005-6015:80", {target: 81, published: "7000-7001"}]"#);
        let mut warnings = Vec::new();
        let parsed = ports(&Field::new(&node, "services.a.ports"), &mut warnings).unwrap();
        assert_eq!(
            serde_json::to_value(parsed).unwrap(),
            json!([
                {"target": 80, "published": 6005, "protocol": "tcp"},
                {"target": 81, "published": 7000, "protocol": "tcp"},
            ])
        );
        assert_eq!(
            warnings,
            vec![
                "services.a.ports[0]: published range 6005-6015 for one container port: using 6005",
                "services.a.ports[1]: published range 7000-7001 for one container port: using 7000",
            ]
        );
    }

    #[test]
    fn bad_ports_are_invalid_values() {
        assert_eq!(
            port_error(r#"["80", "0"]"#),
            "invalid_value services.web.ports[1]: port 0 is out of range (1-65535)"
        );
        assert_eq!(
            port_error(r#"["70000:80"]"#),
            "invalid_value services.web.ports[0]: port 70000 is out of range (1-65535)"
        );
        assert_eq!(
            port_error(r#"["8000-8001:80-82"]"#),
            "invalid_value services.web.ports[0]: published range 8000-8001 and target range 80-82 have different lengths"
        );
        assert_eq!(
            port_error(r#"["80/foo"]"#),
            "invalid_value services.web.ports[0]: port protocol must be tcp, udp or sctp, got \"foo\""
        );
        assert_eq!(
            port_error(r#"["http"]"#),
            "invalid_value services.web.ports[0]: invalid port \"http\""
        );
        assert_eq!(
            port_error(r#"[{target: 80, mode: bridge}]"#),
            "invalid_value services.web.ports[0].mode: port mode must be `host` or `ingress`, got \"bridge\""
        );
        assert_eq!(
            port_error(r#"[{published: 80}]"#),
            "schema services.web.ports[0]: missing required field `target`"
        );
        assert_eq!(
            port_error(r#"[{target: 80, publised: 80}]"#),
            "schema services.web.ports[0].publised: unknown field `publised` (did you mean `published`?)"
        );
        assert_eq!(
            port_error(r#""80:80""#),
            "schema services.web.ports: expected a list, got a string"
        );
    }

    #[test]
    fn expose_forms() {
        let node = parse_node(r#"["3000", 8000, "4000-4002", "5000/udp"]"#);
        let exposed = expose(&Field::new(&node, "services.web.expose")).unwrap();
        assert_eq!(
            serde_json::to_value(exposed).unwrap(),
            json!([
                {"port": 3000, "protocol": "tcp"},
                {"port": 8000, "protocol": "tcp"},
                {"port": 4000, "protocol": "tcp"},
                {"port": 4001, "protocol": "tcp"},
                {"port": 4002, "protocol": "tcp"},
                {"port": 5000, "protocol": "udp"},
            ])
        );
        let node = parse_node(r#"["99999"]"#);
        assert_eq!(
            error_of(expose(&Field::new(&node, "services.web.expose"))),
            "invalid_value services.web.expose[0]: port 99999 is out of range (1-65535)"
        );
    }
}
