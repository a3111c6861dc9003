-- tshark plugin for interop/matrix: lets Wireshark 4.0's MPA dissector see FPDUs whose first
-- 1 to 7 bytes arrive on their own.
--
-- Why: the MPA dissector (epan/dissectors/packet-iwarp-mpa.c) is a heuristic on TCP that turns
-- down any payload shorter than 8 bytes. After TCP reassembly hands it an FPDU that ended inside
-- a segment, the rest of that segment comes back to the heuristics on its own; when that rest
-- is the 1-7 byte head of the next FPDU (or a whole segment is that short) nobody claims it,
-- tshark shows it as Data, and the next segment is read as if an FPDU began there: from then on
-- tshark reports bad CRCs and malformed FPDUs, or silently loses FPDUs, on a stream our own
-- decoder and the peer read without fault. No TCP preference avoids it. docs/interop.md
-- ("tshark and short FPDU heads") has the arrangement that triggers it.
--
-- What: on TCP streams where an MPA Reply was seen (so every later byte is FPDU data), claim a
-- payload shorter than 8 bytes and ask TCP for one more segment. TCP then offers the head
-- together with the next segment, and the unchanged MPA heuristic frames and checks it. Nothing
-- else is claimed, and the MPA dissector still does all framing and CRC checking.
--
-- Use: tshark -X lua_script:interop/mpa_short_head.lua ...

local shim = Proto("mpa_short_head", "MPA: short FPDU head held for the next segment")
local tcp_stream = Field.new("tcp.stream")
local mpa_reply = Field.new("iwarp_mpa.rep")

-- TCP streams (tcp.stream numbers) that carry FPDUs: an MPA Reply was seen on them.
local fpdu_streams = {}

function shim.init()
    fpdu_streams = {}
end

local function hold_short_head(tvb, pinfo, _tree)
    -- 8 bytes is the smallest FPDU the MPA heuristic takes (MPA_SMALLEST_FPDU_LEN)
    if tvb:len() >= 8 then
        return false
    end
    local stream = tcp_stream()
    if stream == nil or not fpdu_streams[stream.value] then
        return false
    end
    pinfo.desegment_offset = 0
    pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
    return true
end
shim:register_heuristic("tcp", hold_short_head)

-- Runs after the dissectors of each frame: note the streams whose MPA Reply went by.
local tracker = Proto("mpa_short_head_streams", "MPA: streams in full operation")
function tracker.dissector(_tvb, _pinfo, _tree)
    if mpa_reply() ~= nil then
        local stream = tcp_stream()
        if stream ~= nil then
            fpdu_streams[stream.value] = true
        end
    end
end
register_postdissector(tracker, true)
