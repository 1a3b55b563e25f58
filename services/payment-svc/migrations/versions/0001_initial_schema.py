"""Initial schema: plumbing (outbox, inbox, relay lease), ar_web (api_key, idempotency_key), payment tables.

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
    op.create_table('chargeback',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.Column('payment_id', sa.String(length=40), nullable=False),
    sa.Column('processor', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=128), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False, comment='open, merchant_won, client_won'),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chargeback')),
    sa.UniqueConstraint('processor', 'reference', name='uq_chargeback_processor_reference'),
    comment='Card disputes: opened, then closed with an outcome'
    )
    op.create_table('customer_mapping',
    sa.Column('processor', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.String(length=128), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('processor', 'customer_id', name='pk_customer_mapping'),
    comment="The processor's customer id -> our client id"
    )
    op.create_table('parked_event',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('webhook_event_id', sa.String(length=40), nullable=False),
    sa.Column('processor', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=255), nullable=False, comment='The CloudEvents type it will emit'),
    sa.Column('record_table', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=40), nullable=False),
    sa.Column('customer_id', sa.String(length=128), nullable=True, comment="The processor's customer id, if it sent one"),
    sa.Column('payload', sa.JSON(), nullable=False, comment='The event payload, client_id filled in on assignment'),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('parked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_parked_event')),
    comment='Verified events whose client could not be resolved, waiting for review'
    )
    op.create_index('ix_parked_event_open', 'parked_event', ['resolved_at', 'parked_at', 'id'], unique=False)
    op.create_table('payment',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=True, comment='NULL while parked'),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('processor', sa.String(length=64), nullable=False, comment='account name, or manual'),
    sa.Column('reference', sa.String(length=128), nullable=True),
    sa.Column('invoice_ids', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('webhook_event_id', sa.String(length=40), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment')),
    comment='Money received; one row per processor payment (processor, reference)'
    )
    op.create_index('ix_payment_client', 'payment', ['client_id', 'recorded_at', 'id'], unique=False)
    op.create_index('uq_payment_processor_reference', 'payment', ['processor', 'reference'], unique=True, postgresql_where=sa.text("processor != 'manual'"), sqlite_where=sa.text("processor != 'manual'"))
    op.create_table('payment_failure',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.Column('payment_id', sa.String(length=40), nullable=False, comment='The payment this attempt would have been'),
    sa.Column('processor', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=128), nullable=False),
    sa.Column('processor_event_id', sa.String(length=256), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('decline_code', sa.String(length=128), nullable=True),
    sa.Column('failure_kind', sa.String(length=8), nullable=False),
    sa.Column('retry_possible', sa.Boolean(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('webhook_event_id', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_failure')),
    sa.UniqueConstraint('processor', 'processor_event_id', name='uq_payment_failure_event'),
    comment='Failed payment attempts (declines, returned debits before settlement)'
    )
    op.create_table('processor_account',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='stripe or standard'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_processor_account')),
    comment='A webhook sender: the stripe endpoint, or a Standard Webhooks processor (bank, direct debit)'
    )
    op.create_table('refund',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=True),
    sa.Column('payment_id', sa.String(length=40), nullable=False),
    sa.Column('processor', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=160), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('refunded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('webhook_event_id', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund')),
    sa.UniqueConstraint('processor', 'reference', name='uq_refund_processor_reference'),
    comment='Money given back on a payment (refunds, returned direct debits, recalled transfers)'
    )
    op.create_index('ix_refund_payment', 'refund', ['payment_id'], unique=False)
    op.create_table('webhook_event',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('processor_event_id', sa.String(length=256), nullable=False),
    sa.Column('event_type', sa.String(length=128), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False, comment='processed, ignored, parked'),
    sa.Column('raw_body', sa.LargeBinary(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_event')),
    sa.UniqueConstraint('account', 'processor_event_id', name='uq_webhook_event_account_event'),
    comment='Every verified webhook as received (raw body and headers); one row per processor event id'
    )
    op.create_index('ix_webhook_event_received_at', 'webhook_event', ['received_at'], unique=False)
    op.create_table('webhook_secret',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=False),
    sa.Column('secret', sa.Text(), nullable=False, comment='Signing secret; never logged or returned by the API'),
    sa.Column('fingerprint', sa.String(length=32), nullable=False, comment='sha256 prefix, safe to display'),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account'], ['processor_account.name'], name=op.f('fk_webhook_secret_account_processor_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_secret')),
    comment='Signing secrets per account; several are active during a rotation'
    )
    op.create_index('ix_webhook_secret_account', 'webhook_secret', ['account'], unique=False)


def downgrade() -> None:
    op.drop_table('webhook_secret')
    op.drop_table('webhook_event')
    op.drop_table('refund')
    op.drop_table('processor_account')
    op.drop_table('payment_failure')
    op.drop_table('payment')
    op.drop_table('parked_event')
    op.drop_table('customer_mapping')
    op.drop_table('chargeback')
    drop_web_tables(op)
    drop_plumbing_tables(op)
