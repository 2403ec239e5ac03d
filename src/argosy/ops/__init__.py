"""Operations: what a platform engineer runs beside the engine (backup and restore, export and
import of the metadata; later logs, cost, retention, schedules)."""
