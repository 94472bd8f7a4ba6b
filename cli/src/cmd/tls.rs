//! `cathedral tls create-ca|create-cert`: local files only (see [`crate::tls`]).

use std::path::PathBuf;

use clap::Subcommand;

use crate::client::CliError;
use crate::tls::{create_ca, create_cert, Subject};

#[derive(Subcommand)]
pub enum TlsCmd {
    /// A new CA: DIR/ca.pem and DIR/ca-key.pem.
    CreateCa {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "Cathedral test CA")]
        name: String,
    },
    /// A certificate the CA signs: for a node (--node ID with --ip/--dns; server and
    /// client use) or a client (--client NAME). Writes OUT/NAME.pem and OUT/NAME-key.pem.
    CreateCert {
        /// The CA's directory (from create-ca).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long, conflicts_with = "client")]
        node: Option<String>,
        #[arg(long)]
        client: Option<String>,
        /// An IP address the node is reached at; repeatable.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// A DNS name the node is reached at; repeatable.
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `cathedral tls ...`: prints the files written.
pub fn run(command: TlsCmd) -> Result<(), CliError> {
    let files = match command {
        TlsCmd::CreateCa { out, name } => create_ca(&out, &name)?,
        TlsCmd::CreateCert {
            ca,
            node,
            client,
            ip,
            dns,
            out,
        } => {
            let subject = match (node, client) {
                (Some(id), None) => Subject::Node {
                    id,
                    ips: ip,
                    names: dns,
                },
                (None, Some(name)) => Subject::Client { name },
                _ => return Err(CliError::invalid("give --node ID or --client NAME")),
            };
            create_cert(&ca, subject, &out)?
        }
    };
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
