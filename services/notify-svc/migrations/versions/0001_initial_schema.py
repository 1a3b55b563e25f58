"""Initial schema: plumbing (outbox, inbox, relay lease), ar_web (api_key, idempotency_key), notify tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ar_events.migrations import create_plumbing_tables, drop_plumbing_tables
from ar_web.migrations import create_web_tables, drop_web_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables(op)
    create_web_tables(op)
    op.create_table('client_contact',
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False, comment='Time of the event the row comes from'),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id'),
    comment='Contact projection from ClientRegistered/ClientUpdated: the latest by event time wins'
    )
    op.create_table('client_statement',
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('statement', sa.JSON(), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client_id'),
    comment='The latest statement snapshot seen for a client (for template previews)'
    )
    op.create_table('notification',
    sa.Column('id', sa.String(length=40), nullable=False, comment='sha256(key, channel, recipient): one row per delivery'),
    sa.Column('notification_key', sa.String(length=255), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('recipient_name', sa.String(length=300), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('client_name', sa.String(length=300), nullable=False),
    sa.Column('case_id', sa.String(length=128), nullable=True),
    sa.Column('cycle', sa.Integer(), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=35), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('sender_kind', sa.String(length=32), nullable=False),
    sa.Column('sender_name', sa.String(length=300), nullable=True),
    sa.Column('sender_email', sa.String(length=320), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False, comment="The source event's data: everything rendering needs"),
    sa.Column('source_event_id', sa.String(length=64), nullable=False),
    sa.Column('source_event_type', sa.String(length=255), nullable=False),
    sa.Column('correlation_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False, comment='Bumped by a manual resend'),
    sa.Column('recoveries', sa.Integer(), nullable=False, comment="Times found in 'sending' after a crash"),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('error_code', sa.String(length=32), nullable=True),
    sa.Column('permanent', sa.Boolean(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    comment='One message to one recipient on one channel, and where its delivery stands'
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index('ix_notification_case', ['case_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_notification_client', ['client_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_notification_due', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_notification_lease', ['lease_until'], unique=False, postgresql_where=sa.text("status = 'sending'"), sqlite_where=sa.text("status = 'sending'"))
    op.create_table('suppression',
    sa.Column('address', sa.String(length=320), nullable=False, comment='Lower-cased email address'),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=True),
    sa.Column('notification_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('address'),
    comment='Addresses that bounced: not mailed again, reported as failed'
    )
    op.create_table('webhook_endpoint',
    sa.Column('url_hash', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('url_hash'),
    comment='Webhook endpoints disabled after a 410 Gone'
    )
    op.create_table('delivery_attempt',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('notification_id', sa.String(length=40), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['notification_id'], ['notification.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    comment='The delivery log: every attempt and how it ended'
    )
    with op.batch_alter_table('delivery_attempt', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempt_notification', ['notification_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_table("delivery_attempt")
    op.drop_table("webhook_endpoint")
    op.drop_table("suppression")
    op.drop_table("notification")
    op.drop_table("client_statement")
    op.drop_table("client_contact")
    drop_web_tables(op)
    drop_plumbing_tables(op)
