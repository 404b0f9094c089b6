//! `lbha-dosim`: runs the DigitalOcean API + metadata simulator until
//! SIGTERM or SIGINT. Prints one JSON line with the bound addresses on
//! stdout once listening (useful with port 0); logs go to stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lbha_dosim::{DropletSpec, FaultsUpdate, FloatingIpSpec, SameHolderAssign, SimConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// A stand-in for the DigitalOcean API v2 (floating/reserved IP actions)
/// and the droplet metadata service, with fault injection under /_sim/.
#[derive(Debug, Parser)]
#[command(name = "lbha-dosim", version)]
struct Args {
    /// Address of the API listener.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    api_listen: SocketAddr,
    /// Also serve the API over HTTPS here, with a certificate from a CA
    /// generated at start (see --tls-ca-out).
    #[arg(long, value_name = "ADDR:PORT")]
    api_tls_listen: Option<SocketAddr>,
    /// A name (IP address or DNS name) the HTTPS certificate is also for,
    /// besides the listener's address (repeatable): e.g. the address of a
    /// relay clients reach the API through.
    #[arg(long = "tls-name", value_name = "NAME", requires = "api_tls_listen")]
    tls_names: Vec<String>,
    /// Write the generated CA's certificate (PEM) here, for clients to
    /// trust (lbha's `ca_file`, curl's `--cacert`).
    #[arg(long, value_name = "PATH", requires = "api_tls_listen")]
    tls_ca_out: Option<PathBuf>,
    /// Address of the metadata listener (169.254.169.254:80 in the lab).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:0")]
    metadata_listen: SocketAddr,
    /// Bearer token the API requires.
    #[arg(long)]
    token: String,
    /// A droplet and the source address its requests come from (repeatable).
    #[arg(long = "droplet", value_name = "ID=SRC_IP")]
    droplets: Vec<DropletSpec>,
    /// A floating IP and optionally its initial holder (repeatable).
    #[arg(long = "floating-ip", value_name = "IP[=HOLDER_ID]")]
    floating_ips: Vec<FloatingIpSpec>,
    /// How long actions stay in progress before they complete.
    #[arg(long, value_name = "N", default_value_t = 500)]
    action_delay_ms: u64,
    /// Keep `IP/32 via HOLDER_SRC_IP` routes in this network namespace.
    #[arg(long)]
    route: bool,
    /// Write the state JSON here after every change.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Region slug reported in responses and metadata.
    #[arg(long, default_value = "nyc3")]
    region: String,
    /// Faults in force at start, as the JSON `POST /_sim/faults` takes
    /// (`/_sim/reset_faults` returns to them); the flags below override it.
    #[arg(long, value_name = "JSON", value_parser = parse_faults)]
    faults: Option<FaultsUpdate>,
    /// The token's custom scopes, comma-separated (e.g.
    /// `reserved_ip:read,reserved_ip:update,droplet:read`); default: full
    /// access.
    #[arg(long, value_name = "SCOPES", value_delimiter = ',')]
    token_scopes: Option<Vec<String>>,
    /// How an assign to the droplet already holding the IP is answered:
    /// `action` (a no-op action) or `reject` (422).
    #[arg(long, value_name = "HOW")]
    same_holder_assign: Option<SameHolderAssign>,
    /// Metadata shows a change of holder this long after the API.
    #[arg(long, value_name = "MS")]
    metadata_lag_ms: Option<u64>,
    /// Sliding-window rate limit per hour (DO: 5000; 0: off).
    #[arg(long, value_name = "N")]
    rate_limit_per_hour: Option<u32>,
    /// Sliding-window rate limit per minute (DO: 250; 0: off).
    #[arg(long, value_name = "N")]
    rate_limit_per_minute: Option<u32>,
    /// The next N actions requested end errored.
    #[arg(long, value_name = "N")]
    action_errors: Option<u32>,
}

fn parse_faults(json: &str) -> Result<FaultsUpdate, String> {
    let faults: FaultsUpdate = serde_json::from_str(json).map_err(|e| e.to_string())?;
    faults.validate()?;
    Ok(faults)
}

impl Args {
    /// `--faults` with the named flags applied over it.
    fn faults(&self) -> FaultsUpdate {
        let mut faults = self.faults.clone().unwrap_or_default();
        if let Some(scopes) = &self.token_scopes {
            faults.token_scopes = Some(Some(scopes.clone()));
        }
        macro_rules! flag {
            ($($field:ident),*) => {$( if self.$field.is_some() { faults.$field = self.$field; } )*};
        }
        flag!(
            same_holder_assign,
            metadata_lag_ms,
            rate_limit_per_hour,
            rate_limit_per_minute,
            action_errors
        );
        faults
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let faults = args.faults();
    let config = SimConfig {
        api_listen: args.api_listen,
        api_tls_listen: args.api_tls_listen,
        tls_names: args.tls_names,
        metadata_listen: args.metadata_listen,
        token: args.token,
        droplets: args.droplets,
        floating_ips: args.floating_ips,
        action_delay: Duration::from_millis(args.action_delay_ms),
        route: args.route,
        state_file: args.state_file,
        region: args.region,
        faults,
    };
    // Install the handlers before anything can tell a supervisor we're up.
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT")?;
    let sim = lbha_dosim::start(config).await?;
    if let (Some(path), Some(pem)) = (&args.tls_ca_out, sim.ca_pem()) {
        std::fs::write(path, pem)
            .with_context(|| format!("writing the CA certificate to {}", path.display()))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "api": sim.api_addr().to_string(),
            "api_tls": sim.api_tls_addr().map(|addr| addr.to_string()),
            "metadata": sim.metadata_addr().to_string(),
        })
    );
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    sim.shutdown().await;
    Ok(())
}
