//! A picture of one stack as inline SVG, drawn here (no JavaScript, no external
//! resources): services as boxes with their kind and ready/desired, `depends_on`
//! as arrows with dependencies in the rows above, published ports and volumes as
//! small marks, and health as a colour plus a word. Pure: nodes in, text out.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::crd::ServiceStatus;
use crate::http::page::escape;
use crate::render::model::Project;

/// What the compose file says about one service's place in the picture.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceShape {
    pub name: String,
    pub depends_on: Vec<String>,
    /// Published ports, `published:target` (or the target alone).
    pub ports: Vec<String>,
    /// Mounted volumes and binds, by source (or target when anonymous).
    pub volumes: Vec<String>,
}

/// The shapes of a compose project's services, read from the compose model (the
/// render output does not carry `depends_on`).
pub fn shapes(project: &Project) -> Vec<ServiceShape> {
    project
        .services
        .iter()
        .map(|(name, service)| ServiceShape {
            name: name.clone(),
            depends_on: service.depends_on.keys().cloned().collect(),
            ports: service
                .ports
                .iter()
                .map(|p| match p.published {
                    Some(published) => format!("{published}:{}", p.target),
                    None => p.target.to_string(),
                })
                .collect(),
            volumes: service
                .volumes
                .iter()
                .filter(|v| v.kind != "tmpfs")
                .map(|v| v.source.clone().unwrap_or_else(|| v.target.clone()))
                .collect(),
        })
        .collect()
}

/// How a service is doing, as a colour and a word (colour alone fails WCAG 1.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Ready,
    Progressing,
    /// Desired 0 (scaled down), or no workload status known yet.
    Unknown,
}

impl Health {
    fn of(status: Option<&ServiceStatus>) -> Health {
        match status {
            Some(s) if s.desired > 0 && s.ready >= s.desired => Health::Ready,
            Some(s) if s.desired > 0 => Health::Progressing,
            _ => Health::Unknown,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Health::Ready => "ready",
            Health::Progressing => "not ready",
            Health::Unknown => "unknown",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Health::Ready => "ok",
            Health::Progressing => "wait",
            Health::Unknown => "unknown",
        }
    }
}

/// Boxes per row: a layer with more services wraps onto further rows.
const COLUMNS: usize = 4;
const BOX_W: i32 = 200;
const BOX_H: i32 = 98;
const GAP_X: i32 = 24;
const GAP_Y: i32 = 44;
const MARGIN: i32 = 12;
/// Characters of a name shown in its box; the whole name is in its tooltip and the table.
const NAME_CHARS: usize = 24;

/// Each service's layer: 0 without (known) dependencies, else one below its
/// deepest dependency. A cycle (which compose refuses anyway) is cut where found.
fn layers(shapes: &[ServiceShape]) -> BTreeMap<&str, usize> {
    let by_name: BTreeMap<&str, &ServiceShape> =
        shapes.iter().map(|s| (s.name.as_str(), s)).collect();
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a ServiceShape>,
        done: &mut BTreeMap<&'a str, usize>,
        visiting: &mut Vec<&'a str>,
    ) -> usize {
        if let Some(layer) = done.get(name) {
            return *layer;
        }
        if visiting.contains(&name) {
            return 0;
        }
        visiting.push(name);
        let layer = by_name[name]
            .depends_on
            .iter()
            .filter(|d| by_name.contains_key(d.as_str()))
            .map(|d| visit(by_name[d.as_str()].name.as_str(), by_name, done, visiting) + 1)
            .max()
            .unwrap_or(0);
        visiting.pop();
        done.insert(name, layer);
        layer
    }
    let mut done = BTreeMap::new();
    for shape in shapes {
        visit(&shape.name, &by_name, &mut done, &mut Vec::new());
    }
    done
}

/// A generous width for an 11 px label, so that it never spills out of its box.
fn mark_width(text: &str) -> i32 {
    i32::try_from(text.chars().count()).unwrap_or(i32::MAX / 16) * 8 + 8
}

fn plural(count: usize, word: &str) -> String {
    match (count, word.strip_suffix('y')) {
        (1, _) => format!("1 {word}"),
        (_, Some(stem)) => format!("{count} {stem}ies"),
        _ => format!("{count} {word}s"),
    }
}

fn shorten(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The stack as an `<svg>` element; `services` gives kinds and ready/desired by
/// workload name (compose names are matched as rendered, sanitised).
pub fn svg(shapes: &[ServiceShape], services: &[ServiceStatus]) -> String {
    if shapes.is_empty() {
        return String::new();
    }
    let layer_of = layers(shapes);
    // Position: (row, column), rows of each layer after those of the layer above.
    let mut by_layer: BTreeMap<usize, Vec<&ServiceShape>> = BTreeMap::new();
    for shape in shapes {
        by_layer
            .entry(layer_of[shape.name.as_str()])
            .or_default()
            .push(shape);
    }
    let mut position: BTreeMap<&str, (i32, i32)> = BTreeMap::new();
    let mut row = 0;
    for members in by_layer.values() {
        for (i, shape) in members.iter().enumerate() {
            let (r, c) = (row + i / COLUMNS, i % COLUMNS);
            let x = MARGIN + i32::try_from(c).unwrap_or(0) * (BOX_W + GAP_X);
            let y = MARGIN + i32::try_from(r).unwrap_or(0) * (BOX_H + GAP_Y);
            position.insert(shape.name.as_str(), (x, y));
        }
        row += members.len().div_ceil(COLUMNS);
    }
    let columns = i32::try_from(shapes.len().min(COLUMNS)).unwrap_or(1);
    let width = 2 * MARGIN + columns * BOX_W + (columns - 1) * GAP_X;
    let height = 2 * MARGIN + i32::try_from(row).unwrap_or(1) * (BOX_H + GAP_Y) - GAP_Y;
    let edges: usize = shapes
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter(|d| position.contains_key(d.as_str()))
                .count()
        })
        .sum();

    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"picture\" role=\"img\" aria-labelledby=\"picture-title\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <title id=\"picture-title\">{} in {}, {}; arrows point from a dependency to the service that depends on it</title>\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#57606a\"/></marker></defs>\n",
        plural(shapes.len(), "service"),
        plural(by_layer.len(), "layer"),
        plural(edges, "dependency"),
    );
    // Arrows first, so that boxes are drawn over them.
    for shape in shapes {
        let (x, y) = position[shape.name.as_str()];
        for dependency in &shape.depends_on {
            let Some(&(dx, dy)) = position.get(dependency.as_str()) else {
                continue;
            };
            let _ = writeln!(
                out,
                "<path class=\"edge\" d=\"M {} {} C {} {}, {} {}, {} {}\" marker-end=\"url(#arrow)\"/>",
                dx + BOX_W / 2,
                dy + BOX_H,
                dx + BOX_W / 2,
                dy + BOX_H + GAP_Y / 2,
                x + BOX_W / 2,
                y - GAP_Y / 2,
                x + BOX_W / 2,
                y - 2
            );
        }
    }
    for shape in shapes {
        let (x, y) = position[shape.name.as_str()];
        let rendered_name = crate::render::sanitise_name(&shape.name);
        let status = services
            .iter()
            .find(|s| s.name == rendered_name || s.name == shape.name);
        let health = Health::of(status);
        let counts = match status {
            Some(s) => format!("{} · {}/{}", escape(&s.kind), s.ready, s.desired),
            None => "not deployed".to_string(),
        };
        let _ = write!(
            out,
            "<g class=\"node {}\"><title>{} — {}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\"/>\
             <rect class=\"stripe\" x=\"{x}\" y=\"{y}\" width=\"6\" height=\"{BOX_H}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"name\">{}</text>\
             <text x=\"{}\" y=\"{}\">{counts}</text>\
             <text x=\"{}\" y=\"{}\" class=\"health\">{}</text>",
            health.class(),
            escape(&shape.name),
            health.word(),
            x + 14,
            y + 20,
            escape(&shorten(&shape.name, NAME_CHARS)),
            x + 14,
            y + 40,
            x + 14,
            y + 60,
            health.word(),
        );
        // Small marks on the last line: published ports, then volumes; a mark
        // that would not fit says only how many.
        let mut mark_x = x + 14;
        let right = x + BOX_W - 8;
        for (class, label, items) in [
            ("port", "port", &shape.ports),
            ("volume", "vol", &shape.volumes),
        ] {
            if items.is_empty() {
                continue;
            }
            let fits = |text: &str| mark_x + mark_width(text) <= right;
            let full = match items.len() {
                1 => format!("{label} {}", shorten(&items[0], 10)),
                n => format!("{label} ×{n}"),
            };
            let text = match fits(&full) {
                true => full,
                false => format!("{label} ×{}", items.len()),
            };
            if !fits(&text) {
                continue;
            }
            let width = mark_width(&text);
            let _ = write!(
                out,
                "<g class=\"mark {class}\"><title>{}</title><rect x=\"{mark_x}\" y=\"{}\" width=\"{width}\" height=\"16\" rx=\"3\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
                escape(&items.join(", ")),
                y + BOX_H - 24,
                mark_x + 4,
                y + BOX_H - 12,
                escape(&text),
            );
            mark_x += width + 6;
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

/// The picture's styles, for the page's stylesheet.
pub const STYLE: &str = r#"
.picture-wrap svg { max-width: 100%; height: auto; display: block; }
svg.picture text { font: 13px system-ui, sans-serif; fill: #1b1f24; }
svg.picture text.name { font-weight: 600; }
svg.picture .node > rect { fill: #ffffff; stroke: #8c959f; }
svg.picture .ok > rect { stroke: #116329; } svg.picture .ok .stripe { fill: #116329; }
svg.picture .wait > rect { stroke: #6b4b00; } svg.picture .wait .stripe { fill: #9a6700; }
svg.picture .unknown .stripe { fill: #8c959f; }
svg.picture .ok text.health { fill: #116329; } svg.picture .wait text.health { fill: #6b4b00; }
svg.picture .mark rect { fill: #f6f8fa; stroke: #8c959f; }
svg.picture .mark text { font-size: 11px; }
svg.picture .edge { fill: none; stroke: #57606a; stroke-width: 1.5; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(name: &str, depends_on: &[&str]) -> ServiceShape {
        ServiceShape {
            name: name.into(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            ..ServiceShape::default()
        }
    }

    fn status(name: &str, ready: i32, desired: i32) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            kind: "Deployment".into(),
            desired,
            ready,
            updated: desired,
        }
    }

    /// Compares with `tests/golden/picture/<name>.svg`; `UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, svg: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/picture")
            .join(format!("{name}.svg"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, svg).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        pretty_assertions::assert_eq!(
            expected,
            svg,
            "{} differs; if intended, run `UPDATE_GOLDEN=1 cargo test --lib picture` and review",
            path.display()
        );
    }

    #[test]
    fn a_chain_is_one_service_a_row() {
        let shapes = [
            shape("web", &["api"]),
            shape("api", &["db"]),
            shape("db", &[]),
        ];
        let layers = layers(&shapes);
        assert_eq!((layers["db"], layers["api"], layers["web"]), (0, 1, 2));
        let svg = svg(&shapes, &[status("web", 1, 1), status("db", 0, 1)]);
        assert_eq!(svg.matches("class=\"edge\"").count(), 2);
        assert!(
            svg.contains("<g class=\"node ok\"><title>web — ready</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<g class=\"node wait\"><title>db — not ready</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<g class=\"node unknown\"><title>api — unknown</title>"),
            "{svg}"
        );
        golden("chain", &svg);
    }

    #[test]
    fn a_diamond_puts_both_middles_on_one_row() {
        let shapes = [
            shape("top", &["left", "right"]),
            shape("left", &["base"]),
            shape("right", &["base"]),
            shape("base", &[]),
        ];
        let layers = layers(&shapes);
        assert_eq!(
            (
                layers["base"],
                layers["left"],
                layers["right"],
                layers["top"]
            ),
            (0, 1, 1, 2)
        );
        let svg = svg(&shapes, &[]);
        assert_eq!(svg.matches("class=\"edge\"").count(), 4);
        golden("diamond", &svg);
    }

    #[test]
    fn thirty_services_wrap_into_rows_of_four() {
        let shapes: Vec<ServiceShape> = (0..30)
            .map(|i| ServiceShape {
                name: format!("service-{i:02}"),
                depends_on: if i == 0 {
                    vec![]
                } else {
                    vec!["service-00".into()]
                },
                ports: if i % 5 == 0 {
                    vec!["8080:80".into()]
                } else {
                    vec![]
                },
                volumes: if i % 7 == 0 {
                    vec!["data".into(), "logs".into()]
                } else {
                    vec![]
                },
            })
            .collect();
        let statuses: Vec<_> = (0..30)
            .map(|i| status(&format!("service-{i:02}"), i % 3, 2))
            .collect();
        let svg = svg(&shapes, &statuses);
        // One row for the base, ceil(29 / 4) = 8 rows below: 9 rows.
        let height = 2 * MARGIN + 9 * (BOX_H + GAP_Y) - GAP_Y;
        assert!(
            svg.contains(&format!("viewBox=\"0 0 896 {height}\"")),
            "{svg}"
        );
        assert_eq!(svg.matches("<g class=\"node").count(), 30);
        assert_eq!(svg.matches("class=\"mark port\"").count(), 6);
        assert!(svg.contains(">port 8080:80</text>"), "{svg}");
        assert!(svg.contains(">vol ×2</text>"), "{svg}");
        golden("thirty", &svg);
    }

    #[test]
    fn services_without_dependencies_share_the_first_rows() {
        let shapes: Vec<_> = ["a", "b", "c"].iter().map(|n| shape(n, &[])).collect();
        let svg = svg(&shapes, &[]);
        assert!(!svg.contains("class=\"edge\""), "{svg}");
        assert!(svg.contains("viewBox=\"0 0 672 122\""), "{svg}");
        golden("independent", &svg);
        assert_eq!(super::svg(&[], &[]), "");
    }

    /// axe cannot tell the background of SVG text, so the palette is checked here:
    /// every text colour against the white box reaches WCAG AA (4.5:1).
    #[test]
    fn the_picture_palette_meets_wcag_aa_contrast() {
        fn luminance(hex: &str) -> f64 {
            let channel = |i: usize| {
                let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
                if c <= 0.03928 {
                    c / 12.92
                } else {
                    ((c + 0.055) / 1.055).powf(2.4)
                }
            };
            0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
        }
        for (fg, bg) in [
            ("#1b1f24", "#ffffff"),
            ("#116329", "#ffffff"),
            ("#6b4b00", "#ffffff"),
            ("#1b1f24", "#f6f8fa"),
        ] {
            assert!(STYLE.contains(fg) && STYLE.contains(bg), "{fg} on {bg}");
            let (a, b) = (luminance(fg), luminance(bg));
            let ratio = (a.max(b) + 0.05) / (a.min(b) + 0.05);
            assert!(ratio >= 4.5, "{fg} on {bg}: {ratio:.2}");
        }
    }

    #[test]
    fn hostile_names_stay_text() {
        let hostile = "<script>alert(1)</script>";
        let shapes = [
            ServiceShape {
                name: hostile.into(),
                ports: vec!["<img src=x onerror=alert(2)>".into()],
                ..shape("x", &[])
            },
            shape("y\"><script>", &[hostile]),
        ];
        let svg = svg(&shapes, &[]);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<img"), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{svg}"
        );
        // A cycle is cut, not followed forever.
        let cycle = [shape("a", &["b"]), shape("b", &["a"])];
        assert_eq!(super::svg(&cycle, &[]).matches("class=\"edge\"").count(), 2);
    }
}
