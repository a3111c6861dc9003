//! The fixed newstyle handshake: greeting, client flags, and option haggling until the client
//! picks the export (`NBD_OPT_EXPORT_NAME` or `NBD_OPT_GO`) or leaves.

use std::io::{self, Read, Write};

use super::proto::*;

/// Option data up to this length is read into memory and parsed (an export name is at most
/// 4096 bytes; `NBD_OPT_GO` adds 6 bytes and two per information request).
pub(crate) const OPTION_DATA_MAX: u32 = 16 * 1024;
/// Option data longer than [`OPTION_DATA_MAX`] but up to this length is read and discarded in
/// small pieces and the option refused with `NBD_REP_ERR_INVALID`; longer data is taken as a
/// denial of service and the connection is dropped without reading it.
pub(crate) const OPTION_DISCARD_MAX: u32 = 1024 * 1024;

/// What the handshake tells about the one export.
#[derive(Debug, Clone)]
pub(crate) struct ExportInfo {
    pub name: String,
    pub description: String,
    pub size: u64,
    pub flags: u16,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_payload: u32,
}

impl ExportInfo {
    /// The empty name selects the default export, which is the only one.
    fn matches(&self, requested: &[u8]) -> bool {
        requested.is_empty() || requested == self.name.as_bytes()
    }
}

/// How the handshake ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The client chose the export: the transmission phase starts, with structured replies
    /// if the client asked for them.
    Transmission { structured: bool },
    /// The client aborted, or broke the protocol: close the connection.
    Close(&'static str),
}

/// Runs the handshake on `s`.
pub(crate) fn negotiate<S: Read + Write>(s: &mut S, export: &ExportInfo) -> io::Result<Outcome> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;

    let mut word = [0u8; 4];
    s.read_exact(&mut word)?;
    let client_flags = u32::from_be_bytes(word);
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Ok(Outcome::Close("unknown client flags"));
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    let mut structured = false;

    loop {
        // NBD_CMD_FLAG_DF is offered once structured replies are on (a read is always one
        // content chunk)
        let flags = if structured { export.flags | FLAG_SEND_DF } else { export.flags };
        let mut head = [0u8; 16];
        s.read_exact(&mut head)?;
        let magic = u64::from_be_bytes(head[0..8].try_into().expect("8 bytes"));
        let option = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(head[12..16].try_into().expect("4 bytes"));
        if magic != IHAVEOPT {
            return Ok(Outcome::Close("bad option magic"));
        }
        if len > OPTION_DISCARD_MAX {
            return Ok(Outcome::Close("option data too long"));
        }
        if len > OPTION_DATA_MAX {
            discard(s, u64::from(len))?;
            if option == OPT_EXPORT_NAME {
                return Ok(Outcome::Close("export name too long"));
            }
            reply(s, option, REP_ERR_INVALID, b"option data too long")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;
        tracing::trace!(option, len, "nbd option");

        match option {
            OPT_EXPORT_NAME => {
                if !export.matches(&data) {
                    return Ok(Outcome::Close("unknown export name"));
                }
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&flags.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&out)?;
                return Ok(Outcome::Transmission { structured });
            }
            OPT_ABORT => {
                // The client may already have closed its end: the reply is a courtesy.
                let _ = reply(s, option, REP_ACK, &[]);
                return Ok(Outcome::Close("client aborted the handshake"));
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply(s, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                    continue;
                }
                let mut server = Vec::with_capacity(4 + export.name.len() + export.description.len());
                server.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                server.extend_from_slice(export.name.as_bytes());
                server.extend_from_slice(export.description.as_bytes());
                reply(s, option, REP_SERVER, &server)?;
                reply(s, option, REP_ACK, &[])?;
            }
            OPT_INFO | OPT_GO => {
                let requests = match parse_info_request(&data) {
                    Ok((name, requests)) if export.matches(name) => requests,
                    Ok(_) => {
                        reply(s, option, REP_ERR_UNKNOWN, b"no such export")?;
                        continue;
                    }
                    Err(why) => {
                        reply(s, option, REP_ERR_INVALID, why.as_bytes())?;
                        continue;
                    }
                };
                send_info(s, option, export, flags, &requests)?;
                reply(s, option, REP_ACK, &[])?;
                if option == OPT_GO {
                    return Ok(Outcome::Transmission { structured });
                }
            }
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    structured = true;
                    reply(s, option, REP_ACK, &[])?;
                } else {
                    reply(s, option, REP_ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data")?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                reply(s, option, REP_ERR_UNSUP, b"no metadata contexts")?;
            }
            OPT_STARTTLS => reply(s, option, REP_ERR_UNSUP, b"no TLS")?,
            _ => reply(s, option, REP_ERR_UNSUP, b"unknown option")?,
        }
    }
}

/// Splits `NBD_OPT_INFO`/`NBD_OPT_GO` data into the export name and the information types
/// asked for.
fn parse_info_request(data: &[u8]) -> Result<(&[u8], Vec<u16>), &'static str> {
    if data.len() < 6 {
        return Err("option data shorter than 6 bytes");
    }
    let name_len = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    if name_len > data.len() - 6 {
        return Err("export name longer than the option data");
    }
    let name = &data[4..4 + name_len];
    let rest = &data[4 + name_len..];
    let count = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let list = &rest[2..];
    if list.len() != count * 2 {
        return Err("information request count does not match the option length");
    }
    Ok((name, list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()))
}

/// The `NBD_REP_INFO` replies: the export (always), the block sizes (always: they are this
/// server's constraints whether asked for or not), and the name and description if asked for.
fn send_info<S: Write>(s: &mut S, option: u32, export: &ExportInfo, flags: u16, requests: &[u16]) -> io::Result<()> {
    let mut info = Vec::with_capacity(12);
    info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    info.extend_from_slice(&export.size.to_be_bytes());
    info.extend_from_slice(&flags.to_be_bytes());
    reply(s, option, REP_INFO, &info)?;

    let mut sizes = Vec::with_capacity(14);
    sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    sizes.extend_from_slice(&export.min_block.to_be_bytes());
    sizes.extend_from_slice(&export.preferred_block.to_be_bytes());
    sizes.extend_from_slice(&export.max_payload.to_be_bytes());
    reply(s, option, REP_INFO, &sizes)?;

    if requests.contains(&INFO_NAME) {
        let mut name = INFO_NAME.to_be_bytes().to_vec();
        name.extend_from_slice(export.name.as_bytes());
        reply(s, option, REP_INFO, &name)?;
    }
    if requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
        let mut description = INFO_DESCRIPTION.to_be_bytes().to_vec();
        description.extend_from_slice(export.description.as_bytes());
        reply(s, option, REP_INFO, &description)?;
    }
    Ok(())
}

/// One option reply.
fn reply<S: Write>(s: &mut S, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out)
}

/// Reads and drops `len` bytes, a bounded piece at a time.
pub(crate) fn discard<S: Read>(s: &mut S, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut s.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a payload"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_request_parsing_checks_every_length() {
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_NAME.to_be_bytes());
        let (name, requests) = parse_info_request(&data).unwrap();
        assert_eq!(name, b"abc");
        assert_eq!(requests, [INFO_BLOCK_SIZE, INFO_NAME]);

        assert!(parse_info_request(&data[..5]).is_err(), "shorter than 6 bytes");
        assert!(parse_info_request(&data[..data.len() - 1]).is_err(), "odd request list");
        let mut long_name = data.clone();
        long_name[0..4].copy_from_slice(&100u32.to_be_bytes());
        assert!(parse_info_request(&long_name).is_err(), "name past the data");
        let mut too_many = data.clone();
        too_many[7..9].copy_from_slice(&3u16.to_be_bytes());
        assert!(parse_info_request(&too_many).is_err(), "count larger than the list");
        let mut empty = 0u32.to_be_bytes().to_vec();
        empty.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse_info_request(&empty).unwrap(), (&b""[..], vec![]));
    }

    #[test]
    fn discard_reads_exactly_the_length_and_fails_on_a_short_stream() {
        let mut src: &[u8] = &[7u8; 100_000];
        discard(&mut src, 99_999).unwrap();
        assert_eq!(src, [7]);
        let mut short: &[u8] = &[1u8; 10];
        assert_eq!(discard(&mut short, 11).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
